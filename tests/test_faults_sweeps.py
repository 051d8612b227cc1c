"""Issue 25, sweeps: a resumed sweep cannot mix models or data; journals are locked and checked
line by line; sizes are bounded before anything is made. Each test failed before the fix."""

import fcntl
import os
import time

import pandas as pd
import pytest
import torch

import unravel
from unravel import sweeps
from unravel.errors import ArgumentError, JournalError, OutputError, ResultsMismatchError
from unravel.sweeps import _journal


def _net(seed=0):
    torch.manual_seed(seed)
    return unravel.models.resmlp(8, 3, width=6, depth=4).double()


def _data(seed=0, n=60):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_resume_with_other_weights_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    sweeps.delete_each(_net(0), _data(), results=path, progress=False)
    with pytest.raises(ResultsMismatchError, match="weights"):
        sweeps.delete_each(_net(1), _data(), results=path, progress=False)


def test_resume_with_other_data_of_the_same_size_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    sweeps.delete_each(_net(), _data(0), results=path, progress=False)
    with pytest.raises(ResultsMismatchError, match="data="):
        sweeps.delete_each(_net(), _data(1), results=path, progress=False)


def test_resume_with_the_same_model_and_data_returns_the_same_frame(tmp_path):
    path = tmp_path / "r.csv"
    first = sweeps.delete_random(_net(), _data(), ks=[1, 2], samples_per_k=3, results=path, progress=False)
    again = sweeps.delete_random(_net(), _data(), ks=[1, 2], samples_per_k=3, results=path, progress=False)
    pd.testing.assert_frame_equal(first, again)
    assert path.read_text().count("\n") == 1 + 1 + 6  # header, baseline, variants: nothing twice


def test_damaged_fingerprint_is_one_error(tmp_path):
    path = tmp_path / "r.csv"
    sweeps.delete_each(_net(), _data(), results=path, progress=False)
    _journal.fingerprint_path(path).write_text("{not json")
    with pytest.raises(JournalError, match="r.csv.sweep.json"):
        sweeps.delete_each(_net(), _data(), results=path, progress=False)


def test_renamed_header_is_one_error_naming_line_1(tmp_path):
    path = tmp_path / "r.csv"
    sweeps.delete_each(_net(), _data(), results=path, progress=False)
    path.write_text(path.read_text().replace("variant", "variant_id", 1))
    with pytest.raises(JournalError, match="line 1"):
        sweeps.delete_each(_net(), _data(), results=path, progress=False)


def test_last_line_cut_inside_a_quoted_field_is_redone(tmp_path):
    path = tmp_path / "r.csv"
    kw = dict(ks=[2, 3], samples_per_k=2, results=path, progress=False)
    full = sweeps.delete_random(_net(), _data(), **{**kw, "results": tmp_path / "full.csv"})
    sweeps.delete_random(_net(), _data(), **kw)
    lines = path.read_text().splitlines(keepends=True)
    cut = lines[-1][: lines[-1].index('"') + 3] + "\n"  # inside the quoted units, saved with a newline
    path.write_text("".join(lines[:-1]) + cut)
    with pytest.warns(UserWarning, match=f"line {len(lines)}"):
        resumed = sweeps.delete_random(_net(), _data(), **kw)
    pd.testing.assert_frame_equal(resumed, full)
    assert pd.read_csv(path).shape[0] == len(full)  # the file reads again


def test_damaged_line_before_the_last_is_refused_naming_it(tmp_path):
    path = tmp_path / "r.csv"
    sweeps.delete_each(_net(), _data(), results=path, progress=False)
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace(",", ";", 3)
    path.write_text("".join(lines))
    with pytest.raises(JournalError, match=r"r\.csv'.*line 3"):
        sweeps.delete_each(_net(), _data(), results=path, progress=False)


def test_a_locked_journal_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.touch()
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another sweep holds it
    try:
        with pytest.raises(JournalError, match="in use"):
            sweeps.delete_each(_net(), _data(), results=path, progress=False)
    finally:
        os.close(fd)
    frame = sweeps.delete_each(_net(), _data(), results=path, progress=False)
    assert pd.read_csv(path).shape[0] == len(frame)


def test_results_file_that_cannot_be_written_fails_before_the_sweep(tmp_path):
    with pytest.raises(OutputError, match="folder"):
        sweeps.delete_each(_net(), _data(), results=tmp_path, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        sweeps.delete_each(_net(), _data(), results=tmp_path / "file" / "r.csv", progress=False)


def test_huge_sample_counts_fail_at_once():
    t = time.perf_counter()
    with pytest.raises(ArgumentError, match="variants"):
        sweeps.delete_random(_net(), _data(), ks=[1], samples_per_k=10**12, progress=False)
    with pytest.raises(ArgumentError, match="k in ks"):
        sweeps.reorder_random(_net(), _data(), ks=[10**9], samples_per_k=1, progress=False)
    assert time.perf_counter() - t < 5


def test_empty_ks_is_one_error():
    with pytest.raises(ArgumentError, match=r"ks=\[\]"):
        sweeps.delete_random(_net(), _data(), ks=[], progress=False)


def test_lazy_variants_equal_the_listed_ones():
    """The generated variants are those of the same seed before (equal to running them by hand)."""
    import numpy as np

    from unravel.sweeps import Variant, run_variants

    net, d = _net(), _data()
    frame = sweeps.delete_random(net, d, ks=[1, 3], samples_per_k=3, seed=5, progress=False)
    rng = np.random.default_rng(5)
    mine = [Variant(id=i, k=k, deleted=tuple(sorted(int(j) for j in rng.choice(4, size=k, replace=False))))
            for i, k in enumerate([1, 1, 1, 3, 3, 3])]
    by_hand = run_variants("delete_random", net, d, mine, progress=False)
    assert frame.units.tolist() == by_hand.units.tolist()
    assert frame.error.tolist() == by_hand.error.tolist()


@pytest.mark.parametrize("cut", [5, len(",".join(_journal.COLUMNS))])
def test_a_header_cut_by_a_kill_is_written_again(tmp_path, cut):
    path = tmp_path / "r.csv"
    full = sweeps.delete_each(_net(), _data(), results=path, progress=False)
    path.write_text(",".join(_journal.COLUMNS)[:cut])  # killed while the header was written
    with pytest.warns(UserWarning, match="line 1"):
        again = sweeps.delete_each(_net(), _data(), results=path, progress=False)
    pd.testing.assert_frame_equal(again, full)
    assert pd.read_csv(path).shape[0] == len(full)
