"""Issue 25, bad input through the API: names that cannot escape, a model cache that sees the
data, finite numbers, strict unit lists, a block used twice, checkpoints checked on load,
compiled and meta models. Each test failed before the fix."""

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import unravel
from unravel import study, train
from unravel.errors import (ArgumentError, ArgumentTypeError, CheckpointError, OutputError, SpecError,
                            UnsupportedModelError)

SPEC = {"kind": "veit-paths", "models": {"residual": {"name": "resmlp"}}}


def _net(depth=4):
    torch.manual_seed(0)
    return unravel.models.resmlp(8, 3, width=6, depth=depth)


# ------------------------------------------------------------------------------------------
# Study names, spec numbers


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", ".", "", "a\\b", "x\0y"])
def test_study_name_is_one_path_component(name):
    with pytest.raises(SpecError, match="one folder name"):
        study.validate_spec({**SPEC, "name": name})


def test_study_name_cannot_write_outside_out(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SpecError, match="name"):
        study.run_study({**SPEC, "name": "../escaped"}, out, progress=False)
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("field,value", [("analysis.mass", float("nan")), ("analysis.mass", float("inf")),
                                         ("train.lr", float("inf")), ("train.lr", float("nan")),
                                         ("train.weight_decay", float("inf")), ("seed", 10**23)])
def test_spec_numbers_are_finite_and_bounded(field, value):
    spec = {**SPEC, "train": {}, "analysis": {}}
    section, _, key = field.rpartition(".")
    (spec[section] if section else spec)[key] = value
    with pytest.raises(SpecError, match=key):
        study.validate_spec(spec)


def test_spec_data_options_of_the_wrong_type_are_one_error():
    with pytest.raises(ArgumentError, match="mnist1d"):
        study.load_data({"data": "mnist1d", "data_options": {"num_samples": "100"}})
    with pytest.raises(ArgumentError, match="synthetic"):
        study.load_data({"data": "synthetic", "data_options": {"input_shape": "abc"}})


# ------------------------------------------------------------------------------------------
# The model cache sees the data's content


def test_model_cache_key_holds_the_data_content(tmp_path, monkeypatch):
    from PIL import Image

    from unravel.study.runner import Context

    monkeypatch.setenv("UNRAVEL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "img"
    for c, level in (("a", 0), ("b", 255)):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(root / c / f"{i}.png")
    spec = study.parse_spec({**SPEC, "data": "image_folder", "data_root": str(root),
                             "data_options": {"image_size": 8, "test_fraction": 0.5},
                             "models": {"residual": {"name": "resmlp", "depth": 1, "width": 4}},
                             "train": {"epochs": 1, "batch_size": 4}})
    Context(spec, tmp_path, torch.device("cpu"), (0,), False).trained("residual", 0)
    os.rename(root / "a", root / "tmp")  # the two classes swap their images
    os.rename(root / "b", root / "a")
    os.rename(root / "tmp", root / "b")
    Context(spec, tmp_path, torch.device("cpu"), (0,), False).trained("residual", 0)
    assert len(list((tmp_path / "cache" / "models").glob("*.pt"))) == 2  # trained again, not reused


# ------------------------------------------------------------------------------------------
# Numbers


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0, 1e30, "0.1", True])
def test_fit_refuses_a_rate_that_is_not_finite_and_bounded(lr):
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    with pytest.raises(ArgumentError, match="lr"):
        train.fit(_net(), (x, y), epochs=1, lr=lr, progress=False)


def test_heal_refuses_an_infinite_rate():
    with pytest.raises(ArgumentError, match="lr"):
        unravel.prune.heal(_net(), unravel.data.synthetic(40, input_shape=(8,), num_classes=3), steps=1, lr=float("inf"))


@pytest.mark.parametrize("seed", [10**23, -1, 1.5])
def test_seeds_are_64_bit_integers(seed):
    x, y = torch.randn(8, 8), torch.randint(0, 3, (8,))
    with pytest.raises(ArgumentError, match="seed"):
        unravel.sweeps.delete_random(_net(), (x, y), ks=[1], seed=seed, progress=False)
    with pytest.raises(ArgumentError, match="seed"):
        train.fit(_net(), (x, y), epochs=1, seed=seed, progress=False)


def test_huge_models_are_refused_before_building():
    with pytest.raises(ArgumentError, match="depth"):
        unravel.models.build_model("resmlp", (8,), num_classes=3, depth=10**9)
    with pytest.raises(ArgumentError, match="GiB"):
        unravel.models.build_model("resmlp", (8,), num_classes=3, depth=500, width=60000)


# ------------------------------------------------------------------------------------------
# Unit lists


@pytest.mark.parametrize("order", [[2.7, 1, 0.2, 3], "1023", [[1, 0], 2, 3], None, {0: 1}])
def test_reorder_takes_units_only(order):
    with pytest.raises(ArgumentError):
        with unravel.lesion.reorder(_net(), order):
            pass


def test_reorder_takes_names_and_units_too():
    net = _net()
    units = unravel.find_units(net)
    x = torch.randn(3, 8)
    with unravel.lesion.reorder(net, [1, 0, 2, 3]):
        want = net(x)
    with unravel.lesion.reorder(net, ["blocks.1", units[0], 2, np.int64(3)]):
        assert torch.equal(net(x), want)


@pytest.mark.parametrize("units", [None, 1.0, [0, 1.5], torch.tensor(1.0), [None]])
def test_delete_takes_units_only(units):
    with pytest.raises(ArgumentError):
        with unravel.lesion.delete(_net(), units):
            pass


@pytest.mark.parametrize("place", [{0: [1, 2]}, {(): 1}, {0: None}, {(0, 1): 1}, {0: torch.tensor([1, 2])}])
def test_place_takes_one_unit_per_position(place):
    with pytest.raises(ArgumentError):
        with unravel.intervene(_net(), place=place):
            pass


def test_a_block_used_twice_is_refused_everywhere():
    b = _net().blocks[0]
    net = nn.Sequential(b, b)
    x, y = torch.randn(4, 6), torch.randint(0, 6, (4,))
    for f in (unravel.find_units, unravel.unravel, lambda m: unravel.attribution.path_length_gradients(m, x, y),
              lambda m: unravel.sweeps.delete_each(m, (x, y), progress=False),
              lambda m: unravel.lesion.delete(m, [0]).__enter__()):
        with pytest.raises(UnsupportedModelError, match="registered in 2 places"):
            f(net)


def test_an_aliased_container_is_not_a_block_used_twice():
    net = _net()
    net.alias = net.blocks  # the same list reachable under two names: each block is still one place
    assert len(unravel.find_units(net)) == 4


# ------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_records_a_content_hash_and_refuses_a_changed_file(tmp_path):
    path = train.save(_net(), tmp_path / "m.pt")
    ckpt = torch.load(path, weights_only=True)
    first = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][first].view(-1)[0] += 1  # an edit torch's zip does not see (written anew)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="content hash"):
        train.load(path, _net())


def test_a_bit_flipped_checkpoint_is_refused(tmp_path):
    path = train.save(_net(), tmp_path / "m.pt")
    raw = bytearray(path.read_bytes())
    marker = raw.find(b"data/0")  # the first tensor's record: flip a byte of its data
    i = raw.find(b"PK", marker + 10) - 5
    raw[i] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        train.load(path, _net())


def test_an_all_nan_checkpoint_loads_with_a_warning(tmp_path):
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    path = train.save(net, tmp_path / "m.pt")
    with pytest.warns(UserWarning, match="NaN"):
        train.load(path, _net())
    ok = train.save(_net(), tmp_path / "ok.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train.load(ok, _net())


def test_a_checkpoint_whose_state_dict_is_a_list_is_one_error(tmp_path):
    torch.save({"state_dict": [1, 2]}, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="list"):
        train.load(tmp_path / "m.pt", _net())


def test_save_that_fails_late_keeps_the_checkpoint(tmp_path, monkeypatch):
    import unravel._io as io_mod

    def fail(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io_mod.os, "replace", fail)
    with pytest.raises(OutputError, match="saved at") as e:
        train.save(_net(), tmp_path / "m.pt")
    monkeypatch.undo()
    rescued = str(e.value).split("saved at ")[1].strip(".'")
    assert train.load(rescued, _net()) is not None
    assert not (tmp_path / "m.pt").exists() and not list(tmp_path.glob(".*tmp"))


# ------------------------------------------------------------------------------------------
# Data files, attribution, devices


@pytest.mark.parametrize("kind", ["object", "corrupt"])
def test_token_id_files_that_cannot_be_read_are_one_error(tmp_path, kind):
    if kind == "object":
        np.save(tmp_path / "ids.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        (tmp_path / "ids.npy").write_bytes(b"\x93NUMPYgarbage")
    with pytest.raises(ArgumentError, match="ids.npy"):
        unravel.data.load("token_ids", root=tmp_path)


def test_attribution_with_every_unit_frozen_is_one_error():
    net = _net()
    net.requires_grad_(False)
    with pytest.raises(ArgumentError, match="frozen"):
        unravel.attribution.path_length_gradients(net, torch.randn(4, 8), torch.randint(0, 3, (4,)), wrt="units")


def test_attribution_on_a_compiled_model_says_so():
    compiled = torch.compile(_net())
    with pytest.raises(ArgumentTypeError, match="compile.*_orig_mod"):
        unravel.attribution.path_length_gradients(compiled, torch.randn(4, 8), torch.randint(0, 3, (4,)))


def test_the_meta_device_is_one_error():
    net = _net().to("meta")
    x, y = torch.randn(4, 8), torch.randint(0, 3, (4,))
    with pytest.raises(ArgumentError, match="meta"):
        unravel.attribution.path_length_gradients(net, x, y)
    with pytest.raises(ArgumentError, match="meta"):
        unravel.sweeps.delete_each(net, (x, y), progress=False)
    with pytest.raises(ArgumentError, match="meta"):
        study.run_study({**SPEC, "train": {"epochs": 1}}, device="meta", progress=False)


def test_data_hash_sees_content_not_identity_or_order_of_a_loader():
    from torch.utils.data import DataLoader, TensorDataset

    from unravel._io import data_hash

    a, b = unravel.data.synthetic(40, seed=0), unravel.data.synthetic(40, seed=0)
    assert data_hash(a) == data_hash(b)
    b.test.tensors[1][0] = (b.test.tensors[1][0] + 1) % 4  # one label of the test split
    assert data_hash(a) != data_hash(b)
    ds = TensorDataset(torch.randn(10, 3), torch.arange(10))
    assert data_hash(DataLoader(ds, shuffle=True)) == data_hash(DataLoader(ds)) == data_hash(ds)
    with pytest.raises(ArgumentTypeError, match="content"):
        data_hash(object())


def test_a_study_whose_summary_cannot_be_written_keeps_it(tmp_path, monkeypatch):
    import json

    import unravel._io as io_mod

    spec = {"kind": "norm-preservation", "data": "synthetic", "data_options": {"num_samples": 80, "input_shape": [1, 8]},
            "models": {"residual": {"name": "preact_resnet_cifar", "width": 2},
                       "plain": {"name": "preact_plain_cifar", "width": 2}},
            "train": {"epochs": 1}, "analysis": {"depths": [8], "probe_size": 2, "calibration_size": 32}}

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.os, "replace", fail)
    with pytest.raises(OutputError, match="saved at") as e:
        study.run_study(spec, tmp_path, progress=False)
    rescued = str(e.value).split("saved at ")[1].strip(".'")
    saved = json.loads(open(rescued).read())
    assert len(saved["claims"]) == 3 and len(saved["checks"]) == 1  # plain-farther is a check
