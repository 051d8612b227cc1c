"""Issue 25 through the command line: outputs checked before the work, results never lost to a
late write error, a resumed sweep that cannot mix models, one line (never a traceback) for
every user error. Each test failed before the fix."""

import pandas as pd
import pytest

from unravel.cli import main

TINY = ["resmlp", "--depth", "2", "--width", "8", "--data", "synthetic", "--no-progress"]


def _one_line(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("unravel: error:"), err
    for f in fragments:
        assert f in last, last
    return last


def test_lesion_out_onto_a_folder_fails_before_training(capsys, tmp_path):
    _one_line(capsys, ["lesion", *TINY, "--epochs", "1", "--out", str(tmp_path)], "is a folder")
    assert "training" not in capsys.readouterr().err


def test_outputs_that_cannot_be_written_fail_before_the_work(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line(capsys, ["lesion", *TINY, "--epochs", "1", "--out", str(blocker / "f.csv")], "cannot write")
    _one_line(capsys, ["train", *TINY, "--epochs", "1", "--save", str(blocker / "m.pt")], "--save")
    _one_line(capsys, ["prune", *TINY, "--epochs", "1", "--budget", "0.1", "--out", str(blocker / "p")], "--out")
    _one_line(capsys, ["lesion", *TINY, "--epochs", "1", "--results", str(blocker / "r.csv")], "results file")
    _one_line(capsys, ["train", *TINY, "--epochs", "1", "--save", "/proc/unravel-test.pt"], "/proc")


def test_a_late_write_error_keeps_the_frame(capsys, tmp_path, monkeypatch):
    import unravel._io as io_mod

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.os, "replace", fail)
    last = _one_line(capsys, ["lesion", *TINY, "--epochs", "1", "--out", str(tmp_path / "f.csv")], "saved at")
    rescued = last.split("saved at ")[1].strip(".'")
    assert len(pd.read_csv(rescued)) == 3  # the baseline and two variants


def test_a_resume_with_another_checkpoint_is_refused(capsys, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["train", *TINY, "--epochs", "1", "--save", str(a)]) == 0
    assert main(["train", *TINY, "--epochs", "2", "--save", str(b)]) == 0
    results = tmp_path / "r.csv"
    assert main(["lesion", *TINY, "--checkpoint", str(a), "--results", str(results)]) == 0
    capsys.readouterr()
    _one_line(capsys, ["lesion", *TINY, "--checkpoint", str(b), "--results", str(results)], "weights")


@pytest.mark.parametrize("argv,fragment", [
    (["train", *TINY, "--epochs", "1", "--lr", "inf"], "finite"),
    (["train", *TINY, "--epochs", "1", "--lr", "nan"], "--lr"),
    (["prune", *TINY, "--epochs", "1", "--budget", "0.1", "--heal", "1", "--heal-lr", "inf"], "finite"),
    (["prune", *TINY, "--epochs", "1", "--budget", "inf"], "finite"),
    (["lesion", *TINY, "--epochs", "1", "--seed", "100000000000000000000000"], "--seed"),
    (["lesion", *TINY, "--epochs", "1", "--depth", "1000000000"], "depth"),
    (["lesion", *TINY, "--kind", "delete_random", "--ks", "1", "--samples-per-k", "1000000000000"], "variants"),
    (["lesion", *TINY, "--kind", "reorder_random", "--ks", "1000000000"], "swaps"),
    (["lm", "train", "--device", "potato"], "potato"),
    (["study", "run", "quickstart", "--device", "meta"], "meta"),
])
def test_bad_numbers_and_devices_are_one_line_before_any_work(capsys, argv, fragment):
    _one_line(capsys, argv, fragment)
    assert "training" not in capsys.readouterr().err


def test_a_damaged_journal_is_one_line(capsys, tmp_path):
    results = tmp_path / "r.csv"
    argv = ["lesion", *TINY, "--epochs", "1", "--results", str(results)]
    assert main(argv) == 0
    capsys.readouterr()
    good = results.read_text()
    results.write_text(good.replace("variant", "id", 1))
    _one_line(capsys, argv, "line 1")
    results.write_text(good)
    (tmp_path / "r.csv.sweep.json").write_text("{bad")
    _one_line(capsys, argv, "r.csv.sweep.json")
