"""The command line as users come to it with their own models (issue 26): a Llama-layout folder
saved with ``save_pretrained`` and a token file; a 1000-class torchvision checkpoint and a
2-class image folder. Every command runs without training the given weights and without a
traceback, and measures what the Python API measures on the same model and data."""

import numpy as np
import pandas as pd
import pytest
import torch

import unravel
from unravel.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def no_training(monkeypatch):
    def fit(*args, **kwargs):
        raise AssertionError("the CLI trained a model whose weights were given")

    monkeypatch.setattr(unravel.train, "fit", fit)


def _ok(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err, err
    assert "training" not in err, err
    return out, err


# ------------------------------------------------------------------------------------------
# A Llama-layout folder and a token file


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("llama")
    cfg = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=2, vocab_size=50, max_position_embeddings=128,
                                   architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "my-llama")
    np.save(root / "ids.npy", np.random.default_rng(0).integers(0, 50, 2000))
    return root


def _lm(llama, *more):
    return [f"hf:{llama / 'my-llama'}", "--data", "token_ids", "--data-root", str(llama / "ids.npy"),
            "--no-progress", *more]


def test_llama_units(llama, capsys, no_training):
    out, _ = _ok(capsys, ["units", *_lm(llama)])
    assert len(out.strip().splitlines()) == 1 + 6  # header, attention and MLP of three layers


def test_llama_lesion_by_layer_deletes_both_units_of_each_layer(llama, tmp_path, capsys, no_training):
    out, err = _ok(capsys, ["lesion", *_lm(llama, "--group", "layer", "--out", str(tmp_path / "f.csv"), "--plot",
                                          str(tmp_path / "layers.png"))])
    assert "measuring on the test split" in err and (tmp_path / "layers.png").is_file()
    frame = pd.read_csv(tmp_path / "f.csv")
    assert len(frame) == 1 + 3 and set(frame.per) == {"token"}  # baseline and one row per layer
    model = unravel.models.build_model(f"hf:{llama / 'my-llama'}")
    data = unravel.data.token_ids(llama / "ids.npy")
    units = unravel.find_units(model)
    for (_, row), layer in zip(frame[frame.variant >= 0].iterrows(), range(3)):
        with unravel.lesion.delete(model, [units[2 * layer], units[2 * layer + 1]]):
            m = unravel.prune.quality(model, data, "test", next_token=True)
        assert row.error == pytest.approx(m["error"], abs=1e-12) and row.loss == pytest.approx(m["loss"], rel=1e-5)


def test_llama_paths_scores_next_tokens_and_plots(llama, tmp_path, capsys, no_training):
    fig = tmp_path / "paths.png"
    _ok(capsys, ["paths", *_lm(llama, "--batch", "4", "--out", str(tmp_path / "p.csv"), "--plot", str(fig))])
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame.length.tolist() == list(range(7)) and frame.share.sum() == pytest.approx(1.0)
    assert fig.is_file() and fig.read_bytes()[:4] == b"\x89PNG"


def test_llama_paths_by_layer_is_the_apis_next_token_decomposition(llama, tmp_path, capsys, no_training):
    _ok(capsys, ["paths", *_lm(llama, "--batch", "3", "--group", "layer", "--out", str(tmp_path / "p.csv"))])
    frame = pd.read_csv(tmp_path / "p.csv")
    model = unravel.models.build_model(f"hf:{llama / 'my-llama'}")
    x = unravel.data.token_ids(llama / "ids.npy").test.tensors[0][:3]
    res = unravel.attribution.path_length_gradients(model, x, x, loss="next_token", group="layer")
    assert frame.length.tolist() == [0, 1, 2, 3]  # lengths counted in layers
    assert np.allclose(frame.norm, res.to_frame().norm, rtol=1e-5, atol=0)


def test_llama_prune_needs_no_budget_with_max_units(llama, tmp_path, capsys, no_training):
    out, err = _ok(capsys, ["prune", *_lm(llama, "--max-units", "1", "--out", str(tmp_path / "pruned"))])
    assert "selecting on the test split" in err and "removed 1 of 6 units" in out
    assert (tmp_path / "pruned" / "model" / "config.json").is_file()
    assert "budget: none (--max-units only)" in (tmp_path / "pruned" / "report.md").read_text()


def test_no_progress_silences_transformers_bars(llama, capsys, monkeypatch):
    from transformers.utils import logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    logging.enable_progress_bar()
    try:
        _ok(capsys, ["units", *_lm(llama)])
        assert not logging.is_progress_bar_enabled()
    finally:
        logging.enable_progress_bar()


def test_training_a_language_model_here_is_one_line(llama, capsys):
    assert main(["lesion", *_lm(llama, "--epochs", "1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unravel lm train" in err


# ------------------------------------------------------------------------------------------
# A 1000-class torchvision checkpoint and a 2-class image folder


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    tvm = pytest.importorskip("torchvision.models")
    from PIL import Image

    root = tmp_path_factory.mktemp("vision")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / "images" / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "images" / c / f"{i}.png")
    torch.manual_seed(0)
    torch.save(tvm.resnet18(num_classes=1000).state_dict(), root / "resnet18.pt")
    return root


def _tv(vision, *more):
    return ["torchvision:resnet18", "--checkpoint", str(vision / "resnet18.pt"), "--data", "image_folder",
            "--data-root", str(vision / "images"), "--no-progress", *more]


def _by_hand(vision, image_size, split):
    """The checkpoint's error on the images, normalised with ImageNet's mean and std."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=1000)
    model.load_state_dict(torch.load(vision / "resnet18.pt"))
    d = unravel.data.image_folder(vision / "images", image_size=image_size)
    x, y = (torch.cat(t) for t in zip(d.train.tensors, d.test.tensors)) if split == "all" else d.test.tensors
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        return float((model.eval()((x - mean) / std).argmax(1) != y).float().mean()), len(y)


def test_torchvision_checkpoint_lesion_keeps_its_head(vision, tmp_path, capsys, no_training):
    _, err = _ok(capsys, ["lesion", *_tv(vision, "--image-size", "24", "--normalize", "imagenet", "--split", "all",
                                         "--out", str(tmp_path / "l.csv"), "--plot", str(tmp_path / "l.svg"))])
    assert "kept the checkpoint's 1000-class head" in err and "all split" in err and "12 examples" in err
    frame = pd.read_csv(tmp_path / "l.csv")
    assert len(frame) == 1 + 8
    error, n = _by_hand(vision, 24, "all")
    base = frame[frame.variant == -1].iloc[0]
    assert base.samples == n == 12 and base.error == pytest.approx(error, abs=1e-12)
    assert (tmp_path / "l.svg").read_text().lstrip().startswith("<?xml")


def test_torchvision_checkpoint_paths(vision, tmp_path, capsys, no_training):
    out, err = _ok(capsys, ["paths", *_tv(vision, "--out", str(tmp_path / "p.csv"))])
    assert "test split" in err and "gradient-weighted mean length" in out
    assert pd.read_csv(tmp_path / "p.csv").length.max() == 8


def test_a_new_head_of_num_classes(vision, tmp_path, capsys, no_training):
    _, err = _ok(capsys, ["paths", *_tv(vision, "--num-classes", "2", "--batch", "2")])
    assert "its 1000-class head: fc is new, with 2 classes" in err


def test_weights_of_another_architecture_are_one_line(vision, capsys, no_training):
    assert main(["units", "torchvision:resnet34", "--data", "image_folder", "--data-root",
                 str(vision / "images")]) == 0
    capsys.readouterr()
    argv = _tv(vision)
    argv[0] = "torchvision:resnet34"
    assert main(["lesion", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit model 'torchvision:resnet34'" in err


# ------------------------------------------------------------------------------------------
# The grammar


def test_a_factory_in_the_current_directory(tmp_path, capsys, monkeypatch, no_training):
    (tmp_path / "mynets.py").write_text("import unravel\n"
                                        "def small(num_classes=10, **kw):\n"
                                        "    return unravel.models.resmlp(40, num_classes, width=8, depth=3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(__import__("sys").modules, "mynets", raising=False)  # imported here, gone after
    net = unravel.models.resmlp(40, 10, width=8, depth=3)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out, _ = _ok(capsys, ["lesion", "mynets:small", "--checkpoint", "w.pt", "--no-progress"])
    assert "delete_each" in out


def test_reference_models_without_weights_train_and_say_so(capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(unravel.train, "fit", lambda *a, **k: calls.append(k["epochs"]))
    assert main(["paths", "resmlp", "--data", "digits", "--batch", "4", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert calls == [5] and "training resmlp on digits for 5 epochs first (no weights given" in err
    assert main(["paths", "resmlp", "--data", "digits", "--batch", "4", "--epochs", "0", "--no-progress"]) == 0
    assert calls == [5] and "training" not in capsys.readouterr().err


@pytest.mark.parametrize("argv, fragment", [
    (["lesion", "resmlp", "--pretrained"], "--pretrained"),
    (["paths", "resmlp", "--image-size", "32"], "--image-size applies to --data image_folder"),
    (["paths", "resmlp", "--normalize", "1,2,3"], "--normalize"),
    (["paths", "resmlp", "--normalize", "0.5,0"], "--normalize"),
    (["paths", "resmlp", "--split", "val"], "--split"),
    (["prune", "resmlp"], "give --budget"),
    (["lesion", "resmlp", "--plot", "fig.txt"], "--plot"),
    (["lesion", "resmlp", "--group", "block"], "--group"),
    (["lesion", "resnet_cifar", "--depth", "8", "--group", "stage", "--kind", "delete_random", "--ks", "4"],
     "3 groups (stage)"),
])
def test_new_options_are_checked_before_anything_runs(argv, fragment, capsys, no_training):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("unravel: error: ") and err.count("\n") == 1 and fragment in err, err


# ------------------------------------------------------------------------------------------
# Figures: the CLI's --plot is the figure unravel.plots draws from the same frame

SMALL = ["resmlp", "--data", "digits", "--epochs", "0", "--no-progress"]


def _pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def _drawn(ax, path):
    import matplotlib.pyplot as plt

    ax.figure.savefig(path, dpi=150)
    plt.close(ax.figure)
    return _pixels(path)


@pytest.mark.parametrize("command, draw", [
    (["lesion"], lambda f: unravel.plots.deletion_errors(f, hue=None)),
    (["lesion", "--kind", "delete_random", "--ks", "1,2", "--samples-per-k", "2"],
     lambda f: unravel.plots.error_vs_k(f, hue=None)),
    (["spectra", "--batch", "2", "--per-example"],
     lambda f: unravel.plots.unit_spectra(f, hue=None, ylabel="median |log singular value|")),
])
def test_plot_is_the_figure_of_unravel_plots(command, draw, tmp_path, capsys):
    fig, csv = tmp_path / "cli.png", tmp_path / "frame.csv"
    _ok(capsys, [command[0], *SMALL, *command[1:], "--out", str(csv), "--plot", str(fig)])
    frame = pd.read_csv(csv, converters={"units": str})  # "" for the unlesioned row, as the sweeps write it
    assert np.array_equal(_pixels(fig), _drawn(draw(frame), tmp_path / "api.png"))


def test_paths_and_prune_plots(tmp_path, capsys):
    fig = tmp_path / "paths.png"
    out, _ = _ok(capsys, ["paths", *SMALL, "--batch", "8", "--out", str(tmp_path / "p.csv"), "--plot", str(fig)])
    frame = pd.read_csv(tmp_path / "p.csv")
    res_window = tuple(int(v) for v in out.split("magnitude in lengths ")[1].split(" ")[0].split(".."))
    api = _drawn(unravel.plots.gradient_by_length(frame, hue=None, window=res_window), tmp_path / "api.png")
    assert np.array_equal(_pixels(fig), api)
    _ok(capsys, ["prune", *SMALL, "--max-units", "2", "--out", str(tmp_path / "pruned"), "--plot",
                 str(tmp_path / "prune.png")])
    assert _pixels(tmp_path / "prune.png").shape[0] > 100


def test_pretrained_weights_are_measured_with_their_own_head(vision, capsys, monkeypatch, no_training):
    import torchvision

    asked = []

    def resnet18(weights=None, **kw):  # stands in for torchvision's download into its cache
        asked.append(weights)
        if kw.get("num_classes", 1000) != 1000:
            raise ValueError(f"The parameter 'num_classes' expected value 1000 but got {kw['num_classes']} instead.")
        torch.manual_seed(0)
        return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])

    monkeypatch.setattr(torchvision.models, "resnet18", resnet18)
    argv = ["torchvision:resnet18", "--pretrained", "--data", "image_folder", "--data-root", str(vision / "images"),
            "--no-progress", "--batch", "2"]
    _, err = _ok(capsys, ["paths", *argv])
    assert asked == ["DEFAULT"] and "kept the pretrained 1000-class head" in err
    assert main(["paths", *argv, "--num-classes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pretrained" in err and "expected value 1000" in err


def test_no_progress_reaches_transformers_imported_later(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("transformers")
    code = ("import sys\nfrom unravel.cli import main\n"
            "assert main(['units', 'resmlp', '--data', 'digits', '--no-progress']) == 0\n"
            "assert 'transformers' not in sys.modules\n"
            "from transformers.utils import logging\n"
            "raise SystemExit(0 if not logging.is_progress_bar_enabled() else 3)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
