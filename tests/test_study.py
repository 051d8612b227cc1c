import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from unravel import study
from unravel.cli import main

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["veit-lesion", "veit-paths", "ssf-dynamics", "norm-preservation", "quickstart"]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_study_list_ships_every_study(capsys):
    assert set(STUDIES) <= set(study.list_studies())
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_runs_quick_and_writes_every_file(name, tmp_path, capsys):
    assert main(["study", "run", name, "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    folders = list((tmp_path / name).iterdir())
    assert len(folders) == 1
    f = folders[0]
    for required in ("config.yaml", "environment.json", "summary.json", "report.md"):
        assert (f / required).is_file(), required
    summary = json.loads((f / "summary.json").read_text())
    assert summary["claims"] and all(isinstance(c["verdict"], bool) and c["measured"] and c["source"]
                                     for c in summary["claims"])
    assert out.count("[") >= len(summary["claims"])
    env = json.loads((f / "environment.json").read_text())
    assert env["seed"] == 0 and env["device"] == "cpu" and env["versions"]["torch"]
    config = yaml.safe_load((f / "config.yaml").read_text())
    assert config["quick"] is True and config["kind"] == study.load_spec(name)["kind"]
    report = (f / "report.md").read_text()
    images = [line.rsplit("(", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert images
    for png in images:
        assert (f / png).stat().st_size > 1000 and (f / png).with_suffix(".svg").is_file()
    csvs = list(f.glob("*.csv"))
    assert csvs and all(len(pd.read_csv(c)) > 0 for c in csvs)
    for c in summary["claims"]:
        assert c["statement"] in report and ("**true**" in report or "**false**" in report)


def _lesion_frame(base, errors, projection=None):
    rows = [{"variant": -1, "k": 0, "error": base, "projection": False}]
    for i, e in enumerate(errors):
        rows.append({"variant": i, "k": 1, "error": e, "projection": bool(projection and i in projection)})
    return pd.DataFrame(rows)


def test_verdicts_follow_the_data():
    res, plain = _lesion_frame(0.1, [0.12, 0.11, 0.13]), _lesion_frame(0.1, [0.8, 0.9, 0.85])
    assert study.claim_single_deletions(res, plain)["verdict"] is True
    assert study.claim_single_deletions(plain, res)["verdict"] is False
    smooth = pd.DataFrame({"k": [0, 1, 2, 3, 4], "error": [0.1, 0.15, 0.2, 0.25, 0.3]})
    cliff = pd.DataFrame({"k": [0, 1, 2, 3, 4], "error": [0.1, 0.11, 0.85, 0.88, 0.9]})
    assert study.claim_smooth_growth(smooth)["verdict"] is True
    assert study.claim_smooth_growth(cliff)["verdict"] is False
    assert study.claim_projection_hurts(_lesion_frame(0.1, [0.5, 0.12], projection={0}))["verdict"] is True
    assert study.claim_projection_hurts(_lesion_frame(0.1, [0.11, 0.5], projection={0}))["verdict"] is False
    decay = pd.DataFrame({"length": range(8), "per_path_norm": [2.0 ** -k for k in range(8)]})
    growth = pd.DataFrame({"length": range(8), "per_path_norm": [2.0 ** k for k in range(8)]})
    assert study.claim_exponential_decay(decay)["verdict"] is True
    assert study.claim_exponential_decay(growth)["verdict"] is False
    assert study.claim_exponential_decay(decay)["measured"]["factor_per_length"] == pytest.approx(0.5)
    shallow = pd.DataFrame({"length": range(11), "norm": [1.0, 5, 3, 1, 0.1, 0, 0, 0, 0, 0, 0]})
    deep = pd.DataFrame({"length": range(11), "norm": [0, 0, 0, 0, 0, 1.0, 3, 5, 3, 1, 0]})
    assert study.claim_mean_length_below(shallow, 10)["verdict"] is True
    assert study.claim_mean_length_below(deep, 10)["verdict"] is False


def test_dynamics_and_norm_verdicts_follow_the_data():
    rows = []
    for epoch, (e_small, e_big) in enumerate([(0.9, 0.9), (0.3, 0.8), (0.2, 0.4), (0.2, 0.2)]):
        rows += [{"epoch": epoch, "subnetwork_units": 1, "error": e_small},
                 {"epoch": epoch, "subnetwork_units": 8, "error": e_big}]
    first = pd.DataFrame(rows)
    assert study.claim_shallow_first(first)["verdict"] is True
    swapped = first.assign(subnetwork_units=first.subnetwork_units.map({1: 8, 8: 1}))
    assert study.claim_shallow_first(swapped)["verdict"] is False
    grows = pd.DataFrame({"epoch": [0, 1, 2], "mean_length": [2.0, 3.0, 4.0]})
    assert study.claim_mean_length_moves(grows)["verdict"] is True
    assert study.claim_mean_length_moves(grows.assign(mean_length=[4.0, 3.0, 2.0]))["verdict"] is False
    assert study.claim_dense_shallower(5.0, 10, 2.0, 10)["verdict"] is True
    assert study.claim_dense_shallower(2.0, 10, 5.0, 10)["verdict"] is False
    assert study.claim_alike(5.0, 10, 5.5, 10)["verdict"] is True
    assert study.claim_alike(2.0, 10, 6.0, 10)["verdict"] is False
    norm = pd.DataFrame({"family": ["residual"] * 4 + ["plain"] * 4, "depth": [8, 8, 20, 20] * 2,
                         "ratio": [1.2, 0.9, 1.05, 0.98, 3.0, 0.2, 4.0, 0.1]})
    assert study.claim_residual_closer(norm)["verdict"] is True
    assert study.claim_deeper_closer(norm)["verdict"] is True
    flipped = norm.assign(family=norm.family.map({"residual": "plain", "plain": "residual"}))
    assert study.claim_residual_closer(flipped)["verdict"] is False
    assert study.claim_deeper_closer(flipped)["verdict"] is False


def _spec(tmp_path, **changes):
    spec = yaml.safe_load((ROOT / "studies" / "norm-preservation.yaml").read_text())
    spec.update(changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("unravel: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["study", "run", str(tmp_path / "missing.yaml")], "does not exist")
    _one_line_error(capsys, ["study", "run", "no-such-study"], "unknown study 'no-such-study'", "veit-lesion")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, epochs=3))], "spec field 'epochs' is unknown",
                    "allowed fields")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, data="imagenet"))], "spec field 'data'",
                    "'imagenet'", "mnist1d")
    bad_model = _spec(tmp_path, models={"residual": {"name": "vgg"}, "plain": {"name": "plain_cifar"}})
    _one_line_error(capsys, ["study", "run", str(bad_model)], "models.residual.name", "'vgg'", "resnet_cifar")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, kind="magic"))], "spec field 'kind'", "veit-lesion")
    empty = tmp_path / "cifar"
    empty.mkdir()
    cifar = _spec(tmp_path, data="cifar10", data_root=str(empty))
    _one_line_error(capsys, ["study", "run", str(cifar)], "CIFAR-10 folder", "data_batch_1")
    _one_line_error(capsys, ["study", "run", str(_spec(tmp_path, data="cifar10"))], "data_root")
    _one_line_error(capsys, ["train", "--model", "vgg"], "unknown model 'vgg'")
    _one_line_error(capsys, ["lesion", "--data", "imagenet"], "unknown dataset 'imagenet'")
    _one_line_error(capsys, ["paths", "--data", "cifar10"], "--data-root")


def test_console_script_reports_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "unravel.cli", "study", "run", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
    help_text = subprocess.run([sys.executable, "-m", "unravel.cli", "study", "run", "--help"], capture_output=True,
                               text=True, cwd=ROOT).stdout
    assert "--quick" in help_text and "--device" in help_text and "--seed" in help_text


def test_cli_paths_and_lesion(tmp_path, capsys):
    args = ["--model", "resnet_cifar", "--depth", "8", "--width", "4", "--data", "digits", "--epochs", "1",
            "--no-progress"]
    assert main(["paths", *args, "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "per_path_norm" in out and "gradient-weighted mean length" in out
    assert main(["lesion", *args, "--out", str(tmp_path / "l.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "l.csv")) == 4
