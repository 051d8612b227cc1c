"""The standard-library corpus, the language model trained on it, and healing a pruned model."""

import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unravel
from unravel import lm
from unravel.data import split_of, stdlib_corpus
from unravel.errors import ArgumentError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _tiny(context=16, depth=2):
    return lm.gpt2(context=context, depth=depth, width=16, heads=2)


@pytest.fixture(scope="module")
def small():
    return unravel.data.stdlib(context=16, train_windows=32, validation_windows=8, test_windows=8)


# ------------------------------------------------------------------------------------------
# The corpus


def test_files_split_by_path_hash_alone_and_disjointly():
    c = stdlib_corpus()
    root = Path(sysconfig.get_paths()["stdlib"])
    listed = [f for s in ("train", "validation", "test") for f in c.files[s]]
    assert len(listed) == len(set(listed))  # no file in two splits
    for split, files in c.files.items():
        assert list(files) == sorted(files) and all(split_of(f) == split for f in files)
    # every .py file outside the excluded folders is in the corpus
    expected = {p.relative_to(root).as_posix() for p in root.rglob("*.py")
                if not any(x in ("site-packages", "test", "tests", "idle_test", "__pycache__")
                           or x.startswith("config-") or x.startswith("_sysconfigdata") for x in p.relative_to(root).parts)}
    assert set(listed) == expected
    shares = np.array([len(c.files[s]) for s in ("train", "validation", "test")]) / len(listed)
    assert 0.8 < shares[0] < 0.97 and all(0.01 < s < 0.12 for s in shares[1:])


def test_streams_windows_and_batches_are_the_files_bytes(tmp_path):
    for i, name in enumerate(["a.py", "pkg/b.py", "pkg/c.py", "d.py", "e.py", "f.py", "g.py", "h.py"]):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(bytes([65 + i]) * (40 + i))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text("left out")
    c = stdlib_corpus(tmp_path, fractions=(0.5, 0.25, 0.25))
    assert "tests/t.py" not in sum(map(list, c.files.values()), [])
    stream = c.tokens("train")
    parts = [(tmp_path / f).read_bytes() for f in c.files["train"]]
    assert bytes(stream.tolist()) == b"\0".join(parts)
    w = c.windows("train", 8)
    assert torch.equal(w.flatten(), stream[: w.numel()].long())  # consecutive, non-overlapping
    picked = c.windows("train", 8, n=3, seed=1)
    assert torch.equal(picked, c.windows("train", 8, n=3, seed=1)) and picked.shape == (3, 8)
    assert all(any(torch.equal(p, row) for row in w) for p in picked)
    b1, b2 = next(c.batches(8, 4, seed=3)), next(c.batches(8, 4, seed=3))
    assert torch.equal(b1, b2) and b1.shape == (4, 8)
    flat = bytes(stream.tolist())
    assert all(bytes(row.tolist()) in flat for row in b1)  # each window is a slice of the stream
    fp = c.fingerprint()
    assert fp["files"]["train"] == len(c.files["train"]) and fp["bytes"]["train"] == stream.numel()
    (tmp_path / c.files["test"][0]).write_bytes(b"changed")
    from unravel.data._stdlib import _corpus, _stream

    _corpus.cache_clear(), _stream.cache_clear()
    assert stdlib_corpus(tmp_path, fractions=(0.5, 0.25, 0.25)).fingerprint()["sha256"] != fp["sha256"]


def test_corpus_arguments_are_checked(tmp_path):
    c = stdlib_corpus()
    with pytest.raises(ArgumentError, match="splits train, validation, test"):
        c.tokens("dev")
    with pytest.raises(ArgumentError, match="context=1 must be an integer >= 2"):
        c.windows("test", 1)
    with pytest.raises(ArgumentError, match="holds .* non-overlapping windows"):
        c.windows("test", 128, n=10 ** 7)
    with pytest.raises(ArgumentError, match="sum to 1"):
        stdlib_corpus(fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ArgumentError, match="no folder"):
        stdlib_corpus(tmp_path / "nothing")
    (tmp_path / "one.py").write_text("x = 1\n")
    with pytest.raises(ArgumentError, match="too few to fill"):
        stdlib_corpus(tmp_path)


def test_stdlib_data_split(small):
    assert (small.num_classes, small.input_shape) == (256, (16,))
    x, y = small.test.tensors
    assert torch.equal(x, y) and x.dtype == torch.long and x.shape == (8, 16)
    assert torch.equal(small.batch(4, "validation")[0], small.validation.tensors[0][:4])
    assert unravel.data.load("stdlib", context=16, train_windows=4, validation_windows=4, test_windows=4).name == "stdlib"
    assert "stdlib" in unravel.data.TOKENS and "stdlib" not in unravel.data.ROOTED
    assert "DataSplit('stdlib'" in repr(small)


# ------------------------------------------------------------------------------------------
# The model and its training


def test_gpt2_lm_is_registered_and_sized_by_the_data(small):
    from unravel.models import build_model

    m = build_model("gpt2_lm", small, depth=2, width=16, heads=2)
    assert (m.config.n_positions, m.config.vocab_size, m.config.n_layer) == (16, 256, 2)
    assert len(unravel.find_units(m)) == 4
    with pytest.raises(ArgumentError, match="multiple of heads"):
        lm.gpt2(width=10, heads=4)
    with pytest.raises(ArgumentError, match="dropout"):
        lm.gpt2(dropout=1.5)


def test_next_token_loss_equals_transformers_own_and_evaluate_counts(small):
    m = _tiny().eval()
    x = small.test.tensors[0]
    with torch.no_grad():
        assert torch.allclose(unravel.losses.next_token_loss(m(x), x), m(x, labels=x).loss, atol=1e-6)
        logits = m(x).logits[:, :-1]
    e = lm.evaluate(m, small, "test", batch_size=3)
    wrong = (logits.argmax(-1) != x[:, 1:]).float().mean()
    assert e["tokens"] == 8 * 15 and math.isclose(e["error"], float(wrong), rel_tol=1e-6)
    assert math.isclose(e["bits_per_byte"], e["loss"] / math.log(2))
    assert math.isclose(e["loss"], float(F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())), rel_tol=1e-5)


def test_fit_lowers_the_validation_loss_and_is_seeded(small):
    t = lm.LMTraining(steps=30, batch_size=8, lr=3e-3, warmup=5, eval_every=10)
    torch.manual_seed(0)
    a = _tiny()
    before = lm.evaluate(a, small, "validation")["loss"]
    h = lm.fit(a, small, t, seed=1, progress=False)
    assert h.step.tolist() == [10, 20, 30] and h.val_loss.iloc[-1] < before - 0.5
    torch.manual_seed(0)
    b = _tiny()
    lm.fit(b, small, t, seed=1, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ArgumentError, match="TextSplit"):
        lm.fit(_tiny(), unravel.data.synthetic(40), t)
    with pytest.raises(ArgumentError, match="lr="):
        lm.LMTraining(lr=0)


def test_bf16_training_autocasts_the_steps_and_keeps_float32_weights(small):
    """``precision="bf16"`` trains under bfloat16 autocast: the weights stay float32, the run
    differs from float32 training (the autocast is applied), still learns, and is cached apart."""
    runs = {}
    for precision in ("fp32", "bf16"):
        t = lm.LMTraining(steps=20, batch_size=8, lr=3e-3, warmup=5, eval_every=20, precision=precision)
        torch.manual_seed(0)
        m = _tiny()
        before = lm.evaluate(m, small, "validation")["loss"]
        h = lm.fit(m, small, t, seed=1, progress=False)
        assert all(p.dtype == torch.float32 for p in m.parameters())
        assert h.val_loss.iloc[-1] < before - 0.3
        runs[precision] = m
    assert not all(torch.equal(p, q) for p, q in zip(runs["fp32"].parameters(), runs["bf16"].parameters()))
    t = lm.LMTraining(steps=3)
    assert lm.cache_key(_tiny(), small, t, 0, "cpu") != lm.cache_key(
        _tiny(), small, lm.LMTraining(steps=3, precision="bf16"), 0, "cpu")
    with pytest.raises(ArgumentError, match="precision='fp16' is not one of fp32, bf16"):
        lm.LMTraining(precision="fp16")


def test_trained_models_are_cached_by_settings(small, monkeypatch):
    t = lm.LMTraining(steps=3, batch_size=2, eval_every=3)
    torch.manual_seed(0)
    a, h = lm.trained(_tiny(), small, t, seed=0, progress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("trained again although cached")

    monkeypatch.setattr(lm, "fit", refuse)
    torch.manual_seed(5)  # other initial weights: the cached ones replace them
    b, h2 = lm.trained(_tiny(), small, t, seed=0, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())) and h.equals(h2)
    keys = {lm.cache_key(_tiny(), small, t, 0, "cpu"), lm.cache_key(_tiny(), small, t, 1, "cpu"),
            lm.cache_key(_tiny(depth=3), small, t, 0, "cpu"),
            lm.cache_key(_tiny(), small, lm.LMTraining(steps=4, batch_size=2, eval_every=3), 0, "cpu")}
    assert len(keys) == 4
    assert '"sha256"' in lm.cache_key(_tiny(), small, t, 0, "cpu")  # the corpus fingerprint is part of the key


def test_cli_lm_train_quick(capsys):
    from unravel.cli import main

    assert main(["lm", "train", "--quick", "--steps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bits per byte" in out and "sha256" in out


# ------------------------------------------------------------------------------------------
# Healing


def _trained_resmlp():
    data = unravel.data.synthetic(300, input_shape=(8,), num_classes=3, noise=1.5)
    net = unravel.models.resmlp(8, 3, width=16, depth=4)
    unravel.train.fit(net, data, epochs=4, optimizer="adam", lr=1e-2, progress=False)
    return net, data


def _shapes(m):
    return [(k, tuple(v.shape)) for k, v in m.state_dict().items()]


def test_heal_lowers_the_training_loss_and_keeps_shapes():
    net, data = _trained_resmlp()
    small = unravel.prune.remove(net, [1, 2])
    shapes, modes = _shapes(small), [m.training for m in small.modules()]
    h = unravel.prune.heal(small, data, steps=40, lr=1e-3, eval_examples=10 ** 6)
    assert h.loss_after <= h.loss_before and h.steps == 40 and h.seconds > 0
    assert h.examples == len(data.train)
    again = unravel.prune.quality(small, data, "train")  # the reported numbers are the model's on the split
    assert math.isclose(again["loss"], h.loss_after, rel_tol=1e-5) and again["error"] == h.error_after
    assert _shapes(small) == shapes and [m.training for m in small.modules()] == modes
    assert len(unravel.find_units(small)) == 2


def test_heal_a_pruned_transformer_by_next_token(small):
    m = _tiny(depth=3)
    lm.fit(m, small, lm.LMTraining(steps=20, batch_size=8, lr=3e-3, warmup=2, eval_every=20), progress=False)
    pruned = unravel.prune.remove(m, [3])  # the MLP of layer 1: a zeroed sublayer
    shapes = _shapes(pruned)
    h = unravel.prune.heal(pruned, small, steps=15, lr=1e-3, batch_size=8, next_token=True)
    assert h.loss_after <= h.loss_before and _shapes(pruned) == shapes
    assert h.examples == len(small.train)


def test_heal_arguments_are_checked():
    net, data = _trained_resmlp()
    with pytest.raises(ArgumentError, match="steps"):
        unravel.prune.heal(net, data, steps=0)
    with pytest.raises(ArgumentError, match="lr="):
        unravel.prune.heal(net, data, lr=-1.0)
    with pytest.raises(ValueError, match="split"):
        unravel.prune.heal(net, data, split="valid")
    frozen = unravel.models.resmlp(8, 3, width=4, depth=1).requires_grad_(False)
    with pytest.raises(ArgumentError, match="nothing to heal"):
        unravel.prune.heal(frozen, data)


def test_cli_prune_heal_reports_its_cost(tmp_path, capsys):
    from unravel.cli import main

    out = tmp_path / "pruned"
    assert main(["prune", "resmlp", "--data", "digits", "--epochs", "1", "--budget", "0.2", "--heal", "5",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "healed 5 steps" in printed
    report = (out / "report.md").read_text()
    assert "healed 5 steps" in report and "before healing" in report
    assert main(["prune", "resmlp", "--budget", "0.1", "--heal", "-1"]) == 2
