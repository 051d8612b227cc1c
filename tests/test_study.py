import json
from dataclasses import dataclass
from importlib import resources

import pandas as pd
import pytest
import torch
import yaml

from unravel import study
from unravel.cli import main
from unravel.errors import ArgumentError, SpecError
from unravel.study import kinds
from .conftest import state_hash

STUDIES = ["veit-lesion", "veit-paths", "ssf-dynamics", "norm-preservation", "quickstart", "lm-ensemble",
           "lm-ensemble-gpu"]
#: The quickest quick run stays in the default suite; the others are marked slow.
FAST = "norm-preservation"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_specs_ship_inside_the_package():
    found = study.list_studies()
    assert set(STUDIES) <= set(found)
    shipped = resources.files("unravel.studies")
    for name in STUDIES:
        resource = next(f for f in shipped.iterdir() if f.is_dir() and f.joinpath(f"{name}.yaml").is_file())
        resource = resource.joinpath(f"{name}.yaml")
        assert found[name].read_text() == resource.read_text()
        assert study.load_spec(name)["kind"] == yaml.safe_load(resource.read_text())["kind"]
        study.load_spec(name, quick=True)


@pytest.mark.parametrize("name", [n if n == FAST else pytest.param(n, marks=pytest.mark.slow) for n in STUDIES])
def test_every_study_runs_quick_and_writes_every_file(name, tmp_path, capsys):
    assert main(["study", "run", name, "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    folders = list((tmp_path / name).iterdir())
    assert len(folders) == 1
    f = folders[0]
    for required in ("config.yaml", "environment.json", "summary.json", "report.md"):
        assert (f / required).is_file(), required
    summary = json.loads((f / "summary.json").read_text())
    assert summary["claims"]
    for c in summary["claims"]:
        assert c["verdict"] in study.VERDICTS and c["source"] and c["rule"] and c["why"] and c["seeds"] == [0]
        assert set(c) >= {"estimate", "ci", "margin", "direction", "paper", "effect", "range"} and len(c["ci"]) == 2
        if c["estimate"] is not None and c["ci"][0] is not None:
            assert c["ci"][0] <= c["estimate"] <= c["ci"][1]
    assert summary["seeds"] == [0] and "git_revision" in summary and "preregistration" in summary
    # a smoke run says so on its first line, in the terminal and in the report
    assert out.splitlines()[0].startswith("smoke run of the pipeline")
    assert out.count("[") >= len(summary["claims"])
    env = json.loads((f / "environment.json").read_text())
    assert env["seeds"] == [0] and env["device"] == "cpu" and env["versions"]["torch"] and "git_dirty" in env
    config = yaml.safe_load((f / "config.yaml").read_text())
    assert config["quick"] is True and config["kind"] == study.load_spec(name)["kind"]
    report = (f / "report.md").read_text()
    assert report.splitlines()[0].startswith("# Smoke run of the pipeline")
    description = (study.load_spec(name).get("description") or "").split()
    assert " ".join(description[:8]) not in " ".join(report.split()) or not description
    images = [line.rsplit("(", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert images
    for png in images:
        assert (f / png).stat().st_size > 1000 and (f / png).with_suffix(".svg").is_file()
    csvs = list(f.glob("*.csv"))
    assert csvs and all(len(pd.read_csv(c)) > 0 for c in csvs)
    for c in summary["claims"]:
        assert c["statement"] in report and f"**{c['verdict']}**" in report


def test_seeds_are_read_and_checked():
    assert study.parse_spec(study.load_spec("veit-lesion")).seeds == (0, 1, 2, 3, 4)
    assert study.parse_spec(_spec(seeds=None, seed=4)).seeds == (4,)
    assert study.parse_spec(_spec(seeds=None)).seeds == (0,)
    _refused(_spec(seed=1, seeds=[1, 2]), "'seed' and 'seeds' are both given")
    _refused(_spec(seeds=[1, 1]), "spec field 'seeds'", "distinct")
    _refused(_spec(seeds=[0, -1]), "spec field 'seeds[1]' is -1")
    # a quickstart's seeds reach its sub-studies
    quick = study.parse_spec(study.load_spec("quickstart")).analysis.studies
    assert {s.seeds for s in quick.values()} == {(0, 1, 2)}


def test_trained_models_are_cached_by_their_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("UNRAVEL_CACHE", str(tmp_path / "cache"))
    spec = study.parse_spec({"kind": "norm-preservation", "data": "synthetic",
                             "data_options": {"num_samples": 80, "input_shape": [1, 8]},
                             "models": {"residual": {"name": "resnet_cifar", "width": 2},
                                        "plain": {"name": "plain_cifar", "width": 2}},
                             "train": {"epochs": 1}, "analysis": {"depths": [8]}})
    ctx = study.Context(spec, tmp_path, torch.device("cpu"), (0,), False)
    m1, h1 = ctx.trained("residual", 0, depth=8)
    assert len(list((tmp_path / "cache" / "models").glob("*.pt"))) == 1
    m2, h2 = ctx.trained("residual", 0, depth=8)
    assert state_hash(m1) == state_hash(m2)
    pd.testing.assert_frame_equal(h1.reset_index(drop=True), h2.reset_index(drop=True), check_dtype=False)
    m3, _ = ctx.trained("residual", 1, depth=8)  # another seed: another model, another entry
    assert state_hash(m3) != state_hash(m1)
    assert len(list((tmp_path / "cache" / "models").glob("*.pt"))) == 2
    # without the cache the same seed trains to the same weights (CPU training is deterministic)
    nocache = study.Context(spec, tmp_path, torch.device("cpu"), (0,), False, cache=False)
    assert state_hash(nocache.trained("residual", 0, depth=8)[0]) == state_hash(m1)


# ------------------------------------------------------------------------------------------
# Specs: every level refuses what it does not know


def _spec(name="veit-lesion", **changes):
    spec = study.load_spec(name)
    for path, value in changes.items():
        *parents, key = path.split("__")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value
    return spec


def _refused(spec, *fragments):
    with pytest.raises(SpecError) as info:
        study.validate_spec(spec)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return str(info.value)


@pytest.mark.parametrize("path, fragments", [
    ("epochs", ["spec field 'epochs' is unknown", "allowed fields: name, kind"]),
    ("train__epoch", ["spec field 'train.epoch' is unknown", "epochs, optimizer, lr, batch_size"]),
    ("models__residual__widht", ["spec field 'models.residual.widht' is unknown", "name, depth, width"]),
    ("models__teacher", ["spec field 'models.teacher' is unknown", "residual, plain"]),
    ("analysis__kss", ["spec field 'analysis.kss' is unknown", "ks, samples_per_k"]),
    ("data_options__sample_count", ["spec field 'data_options.sample_count' is unknown", "num_samples"]),
    ("quick__trian", ["spec field 'quick.trian' is unknown", "train"]),
])
def test_unknown_keys_are_refused_at_every_level(path, fragments):
    _refused(_spec(**{path: 3}), *fragments)


@pytest.mark.parametrize("path, value, fragments", [
    ("kind", "magic", ["spec field 'kind' is 'magic'", "veit-lesion", "quickstart"]),
    ("data", "imagenet", ["spec field 'data' is 'imagenet'", "mnist1d, digits"]),
    ("models__residual__name", "vgg", ["spec field 'models.residual.name' is 'vgg'", "resnet_cifar"]),
    ("models__residual", "resnet_cifar", ["spec field 'models.residual' must be a mapping"]),
    ("train__optimizer", "rmsprop", ["spec field 'train.optimizer' is 'rmsprop'", "sgd, adam"]),
    ("train__schedule", "steps", ["spec field 'train.schedule' is 'steps'", "cosine, step, constant"]),
    ("train__epochs", 0, ["spec field 'train.epochs' is 0", "an integer >= 1"]),
    ("train__lr", "3e-3", ["spec field 'train.lr' is '3e-3'", "write 3.0e-3"]),
    ("analysis__ks", [1, "two"], ["spec field 'analysis.ks[1]' is 'two'"]),
    ("analysis__samples_per_k", 1.5, ["spec field 'analysis.samples_per_k' is 1.5"]),
    ("seeds", [-1], ["spec field 'seeds[0]' is -1"]),
    ("train", [1], ["spec field 'train' must be a mapping", "epochs"]),
])
def test_bad_values_are_refused_with_what_is_allowed(path, value, fragments):
    _refused(_spec(**{path: value}), *fragments)


def test_quick_overrides_are_checked_when_applied(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(quick__train__epoch=1)))
    study.load_spec(path)
    with pytest.raises(SpecError, match="spec field 'train.epoch' is unknown"):
        study.load_spec(path, quick=True)
    with pytest.raises(SpecError, match="spec field 'train.epoch' is unknown"):
        study.run_study(yaml.safe_load(path.read_text()), tmp_path, quick=True)


def test_models_and_data_root_are_checked():
    spec = _spec()
    del spec["models"]["plain"]
    _refused(spec, "spec field 'models' lacks plain", "needs models named residual, plain")
    _refused(_spec(data="cifar10"), "spec field 'data_root' is required for data 'cifar10'")
    _refused(_spec("ssf-dynamics", models__densenet__name="vgg"), "'models.densenet.name' is 'vgg'")


def test_quickstart_substudies_are_checked_with_their_key_path():
    _refused(_spec("quickstart", **{"analysis__veit-lesion__models__residual__name": "x"}),
             "spec field 'analysis.veit-lesion.models.residual.name' is 'x'")
    _refused(_spec("quickstart", **{"analysis__veit-paths__analysis__mass": 2}),
             "spec field 'analysis.veit-paths.analysis.mass' is 2", "<= 1")
    _refused(_spec("quickstart", **{"analysis__veit-paths__seed": 1}),
             "spec field 'analysis.veit-paths.seed' is unknown")
    _refused(_spec("quickstart", analysis__magic={}), "spec field 'analysis.magic' is unknown", "veit-lesion")


def test_parsed_spec_holds_checked_values_and_defaults():
    spec = study.parse_spec(study.load_spec("veit-lesion", quick=True))
    assert spec.kind == "veit-lesion" and spec.analysis.ks == (1, 2, 3) and spec.analysis.samples_per_k == 2
    assert spec.train.epochs == 1 and spec.train.schedule == "step" and spec.train.decay == 0.0001
    assert study.parse_spec(_spec(train={"optimizer": "sgd"})).train.decay == 5e-4  # SGD default weight decay
    assert spec.data == study.DataSpec("mnist1d", None, {"num_samples": 600, "test_fraction": 0.25})
    assert spec.models["residual"].options == {"depth": 14, "width": 8}
    quick = study.parse_spec(study.load_spec("quickstart", quick=True)).analysis.studies
    assert list(quick) == ["veit-lesion", "veit-paths", "norm-preservation"]
    # a sub-study's own train fields win over the quickstart's (norm-preservation trains 8 epochs, even in a quick run)
    assert quick["veit-lesion"].train.epochs == 1 and quick["norm-preservation"].train.epochs == 8
    assert quick["veit-lesion"].data == study.DataSpec("mnist1d", None, {"num_samples": 600})


def test_spec_files_and_names_are_checked(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        study.load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="unknown study 'nope'; available: .*veit-lesion"):
        study.load_spec("nope")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        study.load_spec(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("kind: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        study.load_spec(tmp_path / "bad.yaml")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(SpecError):
        study.load_spec(tmp_path / "binary.yaml")
    assert issubclass(SpecError, ArgumentError) and study.SpecError is SpecError


def test_data_problems_name_the_data(tmp_path):
    with pytest.raises(ArgumentError, match="data 'cifar10': CIFAR-10 folder"):
        study.load_data({"data": "cifar10", "data_root": str(tmp_path)})
    with pytest.raises(SpecError, match="data_root"):
        study.load_data({"data": "mnist"})
    with pytest.raises(ArgumentError, match="data 'mnist1d': num_samples=3"):
        study.load_data({"data_options": {"num_samples": 3}})
    with pytest.raises(SpecError, match="'data_root' does not apply to data 'mnist1d'"):
        study.load_data({"data": "mnist1d", "data_root": str(tmp_path)})


def test_stdlib_reads_another_folder_given_as_data_root(tmp_path):
    """``data_root`` points the stdlib corpus at another folder of .py files (a copy of another
    Python's standard library): it is read, not silently replaced by this Python's."""
    for i in range(60):
        (tmp_path / f"m{i}.py").write_text(f"x_{i} = {i}\n" * 40)
    opts = {"context": 16, "train_windows": 4, "validation_windows": 2, "test_windows": 2}
    data = study.load_data({"data": "stdlib", "data_root": str(tmp_path), "data_options": opts})
    assert data.corpus.root == str(tmp_path.resolve())
    assert set(bytes(data.train.tensors[0].flatten().tolist())) <= set(b"x_0123456789 =\n")


# ------------------------------------------------------------------------------------------
# Kinds: a registry; study folders: plugins


def test_the_framework_loads_a_study_on_first_use():
    import subprocess
    import sys

    code = ("import sys, unravel; from unravel import study; "
            "assert not any(m.startswith('unravel.studies.') for m in sys.modules), 'loaded early'; "
            "study.load_spec('veit-paths'); "
            "assert 'unravel.studies.veit' in sys.modules and 'unravel.studies.lm_ensemble' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


_USER_STUDY = '''
import pandas as pd
from unravel.study import per_seed, register_kind, register_paper, judge, Trials

register_paper("user-units", where="our note", note="a residual MLP of depth 2 has 2 units")


def run(ctx):
    import unravel
    n = [len(unravel.find_units(ctx.model("net", seed))) for seed in ctx.seeds]
    frame = ctx.frame("units", pd.DataFrame({"seed": list(ctx.seeds), "units": n}))
    return [judge("user-units", "It has 2 units", "here", per_seed(lambda g: float(g.units.mean())), Trials(frame),
                  margin=1.5, direction="above", effect="units", n_boot=20)]


register_kind("user-count", roles=("net",))(run)
'''


def test_a_users_study_folder_plugs_in(tmp_path, capsys):
    folder = tmp_path / "my_study"
    folder.mkdir()
    (folder / "__init__.py").write_text(_USER_STUDY)
    (folder / "mine.yaml").write_text("kind: user-count\ntitle: Mine\ndata: synthetic\n"
                                      "data_options: {num_samples: 40}\nmodels: {net: {name: resmlp, depth: 2}}\n"
                                      "seeds: [0, 1]\n")
    assert main(["study", "run", str(folder), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    # every seed's net has exactly 2 units: nothing varies, so the zero-width interval decides nothing
    assert "[inconclusive] It has 2 units: 2 [2, 2]" in out and "no variation measured" in out
    summary = json.loads(next((tmp_path / "out" / "mine").iterdir()).joinpath("summary.json").read_text())
    assert summary["claims"][0]["paper"]["where"] == "our note"
    with pytest.raises(SpecError, match="holds 0 YAML specs"):
        study.load_spec(tmp_path)


def test_kinds_view_keeps_runner_and_roles():
    study.load_all_studies()
    run, roles = study.KINDS["veit-lesion"][:2]
    assert callable(run) and roles == ("residual", "plain")
    assert study.KINDS["ssf-dynamics"].optional_roles == ("densenet", "se_resnet")
    with pytest.raises(TypeError):
        study.KINDS["x"] = study.KINDS["veit-lesion"]  # a read-only view
    with pytest.raises(ArgumentError, match="registered already"):
        study.register_kind("veit-lesion")(lambda ctx: [])


@dataclass(frozen=True)
class _CountSettings:
    probe_size: int = 16


def test_a_registered_kind_runs_with_its_checked_settings(tmp_path, monkeypatch):
    monkeypatch.setitem(kinds._KINDS, "count-units", None)  # so that the kind is gone after the test
    seen = {}

    @study.register_kind("count-units", roles=("net",), analysis=_CountSettings, replace=True)
    def count_units(ctx):
        x, _ = ctx.probe()
        seen.update(probe=len(x), analysis=ctx.analysis)
        ctx.frame("sizes", pd.DataFrame({"n": [len(x)]}))
        frame = pd.DataFrame({"seed": 0, "model": ["resnet", "densenet"], "mean_length": [5.0, 2.0], "units": 10})
        return [study.judge("count", "A count", "here", study.per_seed(lambda g: float(g.mean_length.mean())),
                            study.Trials(frame), margin=0.0, direction="above", effect="mean length", n_boot=20)]

    spec = {"kind": "count-units", "data": "synthetic", "data_options": {"num_samples": 60},
            "models": {"net": {"name": "resmlp", "depth": 2}}, "analysis": {"probe_size": 8}}
    folder = study.run_study(spec, tmp_path, progress=False)
    assert seen == {"probe": 8, "analysis": _CountSettings(8)}
    assert (folder / "sizes.csv").is_file() and folder.parent.name == "count-units"
    with pytest.raises(SpecError, match="'analysis.probe_siz' is unknown; allowed fields: probe_size"):
        study.run_study({**spec, "analysis": {"probe_siz": 8}}, tmp_path)
    with pytest.raises(SpecError, match="'models.teacher' is unknown"):
        study.run_study({**spec, "models": {**spec["models"], "teacher": {"name": "resmlp"}}}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["count-units"]  # nothing written for refused specs


LM_CLAIMS = ["first-layer", "middle-layers", "middle-swaps", "deeper-prunable", "lm-smooth-growth", "mean-length",
             "effective-fraction"]


def test_lm_ensemble_end_to_end_on_a_tiny_model(tmp_path):
    spec = study.load_spec("lm-ensemble", quick=True)
    spec["data_options"] = {"context": 16, "train_windows": 4, "validation_windows": 4, "test_windows": 6}
    spec["models"]["lm"].update(depth=4, width=16)
    spec["analysis"].update(steps=3, eval_every=3, ks=[2, 3, 99], samples_per_k=2, probe_size=2, n_boot=20)
    spec["seeds"] = [0, 1]
    folder = study.run_study(spec, tmp_path, progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert [c["id"] for c in summary["claims"]] == LM_CLAIMS
    for c in summary["claims"]:  # an untrained model: every verdict inconclusive, and it says why
        assert c["verdict"] == "inconclusive" and "did not learn the text" in c["why"] and c["seeds"] == [0, 1]
    layers = pd.read_csv(folder / "delete_layer.csv")
    each = pd.read_csv(folder / "delete_each.csv")
    swaps = pd.read_csv(folder / "swap_adjacent.csv")
    rnd = pd.read_csv(folder / "delete_random.csv")
    assert len(layers) == 2 * 5 and len(each) == 2 * 9 and len(swaps) == 2 * 4  # rows and baselines, per seed
    assert sorted(rnd.k.unique()) == [0, 1, 2, 3] and (rnd[rnd.k >= 2].groupby(["seed", "k"]).size() == 2).all()
    assert set(layers.per) == {"token"} and (layers.samples == 6 * 15).all()
    assert json.loads((folder / "corpus.json").read_text())["files"]["test"] > 0
    assert "lm-ensemble" in study.list_studies()


def test_lm_ensemble_spec_is_checked():
    spec = study.load_spec("lm-ensemble", quick=True)
    with pytest.raises(SpecError, match="'train' does not apply"):
        study.parse_spec({**spec, "train": {"epochs": 2}})
    with pytest.raises(SpecError, match="trains on 'stdlib'"):
        study.parse_spec({**spec, "data": "digits", "data_options": {}})
    with pytest.raises(SpecError, match="'analysis.step' is unknown"):
        study.parse_spec({**spec, "analysis": {"step": 3}})
    parsed = study.parse_spec(study.load_spec("lm-ensemble"))
    assert parsed.seeds == (0, 1, 2, 3, 4) and parsed.analysis.samples_per_k >= 20
    assert parsed.analysis.training.steps == parsed.analysis.steps
    gpu = study.parse_spec(study.load_spec("lm-ensemble-gpu"))
    # the GPU size has enough units (attention and MLP per layer) for the effective-paths claim
    assert 2 * gpu.models["lm"].options["depth"] >= gpu.analysis.min_units
