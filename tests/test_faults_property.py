"""Issue 25's property: random unit lists, ks, sample counts, spec values and journal damage,
thrown at the public API and the command line, give a clear UnravelError or the correct result
(checked against a naive computation), never another exception or a traceback."""

import math
import shutil
import warnings

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import unravel
from unravel import study, sweeps
from unravel.cli import main
from unravel.errors import SpecError, UnravelError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

torch.manual_seed(0)
NET = unravel.models.resmlp(6, 3, width=5, depth=4).double().eval()
X = torch.randn(12, 6, dtype=torch.float64)
Y = torch.randint(0, 3, (12,))
N = 4

# anything a user might pass where units are named
ATOMS = st.one_of(st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
                  st.sampled_from(["blocks.0", "blocks.3", "blocks.9", "1", "", "0,1"]), st.text(max_size=3))
UNIT_SPECS = st.one_of(ATOMS, st.lists(ATOMS, max_size=5), st.lists(st.lists(st.integers(0, 3), max_size=2),
                                                                    max_size=2))


def _expected(spec):
    """The set of unit indices ``spec`` names, or None when it must be refused."""
    items = spec if isinstance(spec, list) else [spec]
    out = set()
    for s in items:
        if isinstance(s, bool) or s is None:
            return None
        if isinstance(s, int) and 0 <= s < N:
            out.add(s)
        elif isinstance(s, str) and s in {f"blocks.{i}" for i in range(N)}:
            out.add(int(s.split(".")[1]))
        else:
            return None
    return out


def _naive(deleted):
    h = NET.stem(X)
    for i, b in enumerate(NET.blocks):
        h = h if i in deleted else b(h)
    return NET.head(h)


@FAST
@given(UNIT_SPECS)
def test_delete_takes_a_unit_list_or_refuses_it(spec):
    expected = _expected(spec)
    try:
        with unravel.lesion.delete(NET, spec), torch.no_grad():
            got = NET(X)
    except UnravelError:
        assert expected is None
        return
    assert expected is not None, f"{spec!r} was accepted"
    with torch.no_grad():
        assert torch.allclose(got, _naive(expected), rtol=1e-12, atol=1e-12)


@FAST
@given(st.lists(ATOMS, min_size=0, max_size=5))
def test_reorder_takes_a_permutation_of_units_or_refuses_it(order):
    names = [_expected(o) for o in order]
    valid = all(n is not None and len(n) == 1 for n in names) and sorted(min(n) for n in names) == list(range(N))
    try:
        with unravel.lesion.reorder(NET, order), torch.no_grad():
            got = NET(X)
    except UnravelError:
        assert not valid
        return
    assert valid, f"{order!r} was accepted"
    perm = [min(n) for n in names]
    with torch.no_grad():
        h = NET.stem(X)
        for q in perm:
            h = NET.blocks[q](h)
        assert torch.allclose(got, NET.head(h), rtol=1e-12, atol=1e-12)


KS = st.one_of(st.integers(-2, 6), st.floats(allow_nan=True), st.lists(st.one_of(st.integers(-1, 6), st.floats()),
                                                                       max_size=3), st.just([]), st.booleans())
SAMPLES = st.one_of(st.integers(-1, 3), st.just(10**12), st.floats(0, 3), st.none())


@FAST
@given(KS, SAMPLES, st.integers(-2, 2**64))
def test_delete_random_takes_ks_and_samples_or_refuses_them(ks, samples, seed):
    try:
        frame = sweeps.delete_random(NET, (X, Y), ks=ks, samples_per_k=samples, seed=seed, progress=False)
    except UnravelError:
        return
    ks = [ks] if isinstance(ks, int) else ks
    assert all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= N for k in ks)
    assert isinstance(samples, int) and 1 <= samples <= 3 and 0 <= seed < 2**63
    rows = frame[frame.variant >= 0]
    assert len(rows) == len(ks) * samples
    assert rows.k.tolist() == [k for k in ks for _ in range(samples)]
    assert [len(u.split(",")) for u in rows.units] == rows.k.tolist()
    for _, r in rows.iterrows():  # each row is the naive lesion's error
        want = (_naive({int(i) for i in r.units.split(",")}).argmax(1) != Y).double().mean().item()
        assert r.error == pytest.approx(want, abs=1e-12)


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**25), st.text(max_size=4),
                    st.none(), st.booleans())


@FAST
@given(lr=NUMBERS, mass=NUMBERS, seed=NUMBERS, epochs=NUMBERS, name=st.one_of(st.text(max_size=6), NUMBERS))
def test_spec_values_are_checked(lr, mass, seed, epochs, name):
    spec = {"kind": "veit-paths", "models": {"residual": {"name": "resmlp"}}, "name": name, "seed": seed,
            "train": {"lr": lr, "epochs": epochs}, "analysis": {"mass": mass}}
    try:
        checked = study.parse_spec(spec)
    except SpecError:
        return
    assert checked.train.lr is None or (math.isfinite(checked.train.lr) and checked.train.lr > 0)
    assert math.isfinite(checked.analysis.mass) and 0 < checked.analysis.mass <= 1
    assert isinstance(checked.train.epochs, int) and checked.train.epochs >= 1
    assert 0 <= checked.seeds[0] < 2**63
    assert "/" not in checked.name and checked.name not in ("", ".", "..")


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    """A finished journal and the frame it gives."""
    folder = tmp_path_factory.mktemp("journal")
    path = folder / "r.csv"
    frame = sweeps.delete_random(NET, (X, Y), ks=[1, 2, 3], samples_per_k=3, results=path, progress=False)
    return path, frame


DAMAGE = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1), st.booleans()),  # a kill (False), or a cut saved with a newline
    st.tuples(st.just("drop"), st.floats(0, 1), st.just(False)),  # a line deleted
    st.tuples(st.just("twice"), st.floats(0, 1), st.just(False)),  # a line written twice
    st.tuples(st.just("garbage"), st.floats(0, 1), st.booleans()),  # a stray line, at the end or inside
)


@FAST
@given(DAMAGE)
def test_a_damaged_journal_resumes_correctly_or_is_refused(journal, tmp_path_factory, damage):
    source, full = journal
    path = tmp_path_factory.mktemp("damaged") / "r.csv"
    shutil.copy(source, path)
    shutil.copy(source.with_name("r.csv.sweep.json"), path.with_name("r.csv.sweep.json"))
    kind, where, flag = damage
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    i = 1 + int(where * (len(lines) - 1)) if len(lines) > 1 else 0
    i = min(i, len(lines) - 1)
    if kind == "cut":
        text = text[: int(where * len(text))] + ("\n" if flag else "")
    elif kind == "drop":
        text = "".join(lines[:i] + lines[i + 1:])
    elif kind == "twice":
        text = "".join(lines[: i + 1] + lines[i:])
    else:
        text = "".join(lines + ["x,\"oops\n"]) if flag else "".join(lines[:i] + ["x,\"oops\n"] + lines[i:])
    path.write_text(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resumed = sweeps.delete_random(NET, (X, Y), ks=[1, 2, 3], samples_per_k=3, results=path, progress=False)
    except UnravelError:
        return
    pd.testing.assert_frame_equal(resumed, full)
    assert len(pd.read_csv(path)) == len(full) + (kind == "twice")  # the file reads again, whole


CLI_VALUES = st.one_of(st.integers(-2, 10**20).map(str), st.floats().map(str), st.text(
    alphabet="0123456789,.-eaxinf ", max_size=8))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(["delete_each", "delete_random", "reorder_random"]), ks=CLI_VALUES,
       samples=CLI_VALUES, seed=CLI_VALUES, depth=st.sampled_from(["2", "0", "-1", "1000000000", "x"]))
def test_the_cli_answers_a_result_or_one_line(capsys, kind, ks, samples, seed, depth):
    argv = ["lesion", "resmlp", "--data", "synthetic", "--width", "4", "--depth", depth, "--epochs", "0",
            "--no-progress", "--kind", kind, "--ks", ks, "--samples-per-k", samples, "--seed", seed]
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("unravel: error:"), err
        assert "unrecognized arguments" not in err, err  # the grammar itself is right: the values are judged
    else:
        assert code == 0 and "error" in out.splitlines()[0]
