"""Per-item outcomes of lesion sweeps (``return_items=True``) and Kendall's tau of reorders."""

import contextlib
import itertools
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import unravel
from unravel import lesion, models, sweeps
from unravel.sweeps._journal import COLUMNS as JOURNAL_COLUMNS
from unravel.errors import ArgumentError
from unravel.sweeps import COLUMNS
from unravel.sweeps.run import _kendall_tau

from .conftest import TinyTransformer, randomize_bn, run_torchrun


STUDIES = {
    "delete_each": lambda m, d, **kw: sweeps.delete_each(m, d, **kw),
    "delete_random": lambda m, d, **kw: sweeps.delete_random(m, d, ks=[1, 2, 3], samples_per_k=3, seed=1, **kw),
    "reorder_random": lambda m, d, **kw: sweeps.reorder_random(m, d, ks=[1, 2, 3], samples_per_k=3, seed=2, **kw),
}


@pytest.fixture(scope="module")
def mnist1d():
    d = unravel.data.mnist1d(num_samples=300)
    return d.test.tensors  # 60 examples, [60, 1, 40]


def _resnet():
    torch.manual_seed(0)
    return randomize_bn(models.resnet_cifar(depth=14, width=4, num_classes=10, in_channels=1, dims=1)).eval()


def _lesioned(model, row):
    """The variant of a frame row as a context manager on ``model`` (the baseline: nothing)."""
    if row.variant == -1:
        return contextlib.nullcontext(model)
    if row.study == "reorder_random":
        return lesion.reorder(model, [int(i) for i in row.order.split(",")])
    return lesion.delete(model, [int(i) for i in row.units.split(",")])


@pytest.mark.parametrize("method", ["fast", "naive"])
@pytest.mark.parametrize("study", list(STUDIES))
def test_items_match_frame_and_a_direct_forward(study, method, mnist1d):
    model = _resnet()
    x, y = mnist1d
    # small batches and max_rows: several batches, several stacked chunks
    kw = dict(batch_size=16, max_rows=32, progress=False, method=method)
    plain = STUDIES[study](model, (x, y), **kw)
    frame, wrong = STUDIES[study](model, (x, y), return_items=True, **kw)
    pd.testing.assert_frame_equal(frame, plain)  # the frame is the one returned without items
    assert isinstance(wrong, np.ndarray) and wrong.dtype == np.bool_ and wrong.shape == (len(frame), len(y))
    assert (wrong.mean(1) == frame.error.to_numpy()).all()  # exactly
    assert frame.variant.iloc[0] == -1
    # every row against a forward of the lesioned model itself
    with torch.no_grad():
        for i, row in enumerate(frame.itertuples()):
            with _lesioned(model, row):
                want = (model(x).argmax(1) != y).numpy()
            assert (wrong[i] == want).all(), (row.variant, row.units, row.order)


def test_delete_each_rows_are_the_units(mnist1d):
    model = _resnet()
    x, y = mnist1d
    frame, wrong = sweeps.delete_each(model, (x, y), batch_size=7, progress=False, return_items=True)
    assert frame.variant.tolist() == [-1, *range(len(unravel.find_units(model)))]
    with torch.no_grad():
        for unit in range(len(frame) - 1):
            with lesion.delete(model, [unit]):
                logits = model(x)
            assert (wrong[frame.index[frame.variant == unit][0]] == (logits.argmax(1) != y).numpy()).all()
        assert (wrong[0] == (model(x).argmax(1) != y).numpy()).all()


def test_fast_and_naive_items_agree_on_a_transformer():
    """Stacked variants of an attention model, split into groups at one unit."""
    torch.manual_seed(0)
    model = TinyTransformer(norm_first=True).eval()
    x, y = torch.randn(20, 5, 3), torch.randint(0, 4, (20,))
    kw = dict(ks=[1, 2, 3], samples_per_k=3, seed=4, batch_size=8, max_rows=16, progress=False, return_items=True)
    fast, wf = sweeps.delete_random(model, (x, y), **kw)
    naive, wn = sweeps.delete_random(model, (x, y), method="naive", **kw)
    assert (wf == wn).all() and (wf.mean(1) == fast.error).all() and (wn.mean(1) == naive.error).all()


class _TokenTagger(nn.Module):
    """A tiny sequence model returning a dict with per-token logits (like a ModelOutput)."""

    def __init__(self, vocab=11, d=8, layers=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(*[models.ResidualBlock(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d)))
                                      for _ in range(layers)])
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        return {"logits": self.head(self.blocks(self.embed(ids)))}


@pytest.mark.parametrize("method", ["fast", "naive"])
@pytest.mark.parametrize("next_token", [False, True])
def test_token_outputs_give_one_column_per_scored_token(next_token, method):
    torch.manual_seed(0)
    net = _TokenTagger().eval()
    ids = torch.randint(0, 11, (6, 9))
    targets = ids.clone()
    targets[0, :3] = -100  # ignored tokens
    targets[4, 5] = -100
    frame, wrong = sweeps.delete_each(net, (ids, targets), batch_size=4, progress=False, next_token=next_token,
                                      method=method, return_items=True)
    t = targets[:, 1:] if next_token else targets
    keep = t != -100
    assert wrong.shape == (len(frame), int(keep.sum())) and (frame.samples == int(keep.sum())).all()
    assert set(frame.per) == {"token"} and (wrong.mean(1) == frame.error).all()
    with torch.no_grad():
        for i, row in enumerate(frame.itertuples()):
            with _lesioned(net, row):
                logits = net(ids)["logits"]
            if next_token:
                logits = logits[:, :-1]
            want = (logits.argmax(-1) != t)[keep].numpy()  # row-major: example by example, token by token
            assert (wrong[i] == want).all(), row.variant


def test_items_refused_with_a_results_file(tmp_path, mnist1d):
    model = _resnet()
    path = tmp_path / "r.csv"
    for name, study in STUDIES.items():
        with pytest.raises(ArgumentError, match="return_items=True cannot be combined with results="):
            study(model, mnist1d, results=path, progress=False, return_items=True)
    assert not path.exists()  # refused before anything was written


def test_items_refused_with_a_shuffling_loader_and_non_bools(mnist1d):
    model = _resnet()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*mnist1d), batch_size=16, shuffle=True)
    with pytest.raises(ArgumentError, match="shuffles"):
        sweeps.delete_each(model, loader, progress=False, return_items=True)
    sweeps.delete_each(model, loader, progress=False)  # without items a shuffled loader is fine
    with pytest.raises(ArgumentError, match="return_items=1 must be True or False"):
        sweeps.delete_each(model, mnist1d, progress=False, return_items=1)


# ------------------------------------------------------------------------------------------
# Kendall's tau


def _brute_tau(order):
    n = len(order)
    pairs = list(itertools.combinations(range(n), 2))
    concordant = sum(order[i] < order[j] for i, j in pairs)
    discordant = sum(order[i] > order[j] for i, j in pairs)
    return (concordant - discordant) / len(pairs)


def test_kendall_tau_of_hand_made_orders():
    for n in (2, 3, 6, 10):
        assert _kendall_tau(list(range(n))) == 1.0
        assert _kendall_tau(list(range(n))[::-1]) == -1.0
        for p in range(n - 1):  # one adjacent swap: one discordant pair
            order = list(range(n))
            order[p], order[p + 1] = order[p + 1], order[p]
            assert _kendall_tau(order) == pytest.approx(1 - 4 / (n * (n - 1)), abs=1e-15)
            assert _kendall_tau(",".join(map(str, order))) == _kendall_tau(order)
    assert _kendall_tau([0, 3, 2, 1]) == _brute_tau([0, 3, 2, 1]) == 0.0
    assert _kendall_tau([2, 0, 1]) == pytest.approx(_brute_tau([2, 0, 1])) == pytest.approx(-1 / 3)
    assert _kendall_tau("") == 1.0  # a frame's baseline row: the identity
    rng = np.random.default_rng(0)
    for n in (2, 5, 12, 40):
        for _ in range(5):
            order = rng.permutation(n).tolist()
            assert _kendall_tau(order) == pytest.approx(_brute_tau(order), abs=1e-12)


def test_reorder_frames_have_kendall_tau(mnist1d):
    model = _resnet()
    frame = sweeps.reorder_random(model, mnist1d, ks=[1, 2, 4], samples_per_k=4, seed=3, progress=False)
    assert frame.columns.tolist() == COLUMNS and COLUMNS[-1] == "kendall_tau"
    assert frame.kendall_tau.dtype == float
    assert frame.loc[frame.variant == -1, "kendall_tau"].tolist() == [1.0]
    n = len(unravel.find_units(model))
    for row in frame[frame.variant >= 0].itertuples():
        order = [int(i) for i in row.order.split(",")]
        assert len(order) == n
        assert row.kendall_tau == pytest.approx(_brute_tau(order), abs=1e-12)
        if order == list(range(n)):  # swaps that undo each other
            assert row.kendall_tau == 1.0
    # one swap of two adjacent units: one discordant pair
    k1 = frame[(frame.k == 1) & (frame.variant >= 0)]
    for row in k1.itertuples():
        a, b = map(int, row.units.split(","))
        assert row.kendall_tau == pytest.approx(_brute_tau([int(i) for i in row.order.split(",")]))
        if b == a + 1:
            assert row.kendall_tau == pytest.approx(1 - 4 / (n * (n - 1)))
    assert (frame.kendall_tau < 1).any()


def test_deletion_frames_have_kendall_tau_nan(mnist1d):
    model = _resnet()
    for frame in (sweeps.delete_each(model, mnist1d, progress=False),
                  sweeps.delete_random(model, mnist1d, ks=[2], samples_per_k=2, progress=False)):
        assert frame.columns.tolist() == COLUMNS and frame.kendall_tau.isna().all()


def test_kendall_tau_survives_a_resumed_results_file(tmp_path, mnist1d):
    model = _resnet()
    path = tmp_path / "r.csv"
    kw = dict(ks=[1, 2], samples_per_k=3, seed=5, progress=False)
    fresh = sweeps.reorder_random(model, mnist1d, **kw)
    first = sweeps.reorder_random(model, mnist1d, results=path, **kw)
    # a journal keeps its columns (kendall_tau is derived from the order): older files still resume
    assert path.read_text().splitlines()[0].split(",") == JOURNAL_COLUMNS
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n")  # as if killed after two variants
    resumed = sweeps.reorder_random(model, mnist1d, results=path, **kw)
    for got in (first, resumed):
        pd.testing.assert_frame_equal(got.drop(columns="loss"), fresh.drop(columns="loss"))
    assert (resumed.kendall_tau == fresh.kendall_tau).all()


# ------------------------------------------------------------------------------------------
# Distributed: items are gathered like rows


_DIST = textwrap.dedent("""
    import sys, numpy as np, torch, torch.distributed as dist, unravel
    from unravel import lesion, models, sweeps
    torch.manual_seed(0)
    model = models.resnet_cifar(14, width=4).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    df, wrong = sweeps.reorder_random(model, (x, y), ks=[1, 2, 3], samples_per_k=3, seed=5, batch_size=16,
                                      progress=False, return_items=True)
    assert dist.is_initialized() and dist.get_world_size() == 2
    np.save(sys.argv[1] + f".rank{dist.get_rank()}.npy", wrong)
    df.to_csv(sys.argv[1] + f".rank{dist.get_rank()}", index=False)
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_process_items_equal_single_process(tmp_path):
    run_torchrun(_DIST, tmp_path)
    torch.manual_seed(0)
    model = models.resnet_cifar(14, width=4).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    single, wrong = sweeps.reorder_random(model, (x, y), ks=[1, 2, 3], samples_per_k=3, seed=5, batch_size=16,
                                          progress=False, return_items=True)
    for rank in (0, 1):  # every rank returns the whole frame and all its items
        got = pd.read_csv(tmp_path / f"out.csv.rank{rank}", keep_default_na=False)
        assert got.variant.tolist() == single.variant.tolist()
        assert (got.kendall_tau.astype(float) == single.kendall_tau).all()
        assert (np.load(tmp_path / f"out.csv.rank{rank}.npy") == wrong).all()
