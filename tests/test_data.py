import pickle
import random

import numpy as np
import pytest
import torch

import unravel
from unravel import data


def test_mnist1d_shapes_determinism_and_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    expect_np, expect_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    a = data.mnist1d(num_samples=400, seed=1)
    assert (np.random.rand(), random.random()) == (expect_np, expect_py)
    b = data.mnist1d(num_samples=400, seed=1)
    c = data.mnist1d(num_samples=400, seed=2)
    assert a.input_shape == (1, 40) and a.num_classes == 10
    assert a.train.tensors[0].shape == (320, 1, 40) and len(a.test) == 80
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    # stratified: every class is in the test split
    assert set(a.test.tensors[1].tolist()) == set(range(10))


def test_digits_split_from_seed():
    a, b, c = data.digits(seed=0), data.digits(seed=0), data.digits(seed=1)
    assert a.train.tensors[0].shape[1:] == (1, 8, 8)
    assert float(a.train.tensors[0].max()) <= 1.0 and float(a.train.tensors[0].min()) >= 0.0
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    assert len(a.train) + len(a.test) == 1797


def _write_cifar(folder, n=4, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=n).tolist(), b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return names


def test_cifar10_from_local_files(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    d = data.cifar10(tmp_path)
    assert len(d.train) == 20 and len(d.test) == 4 and d.input_shape == (3, 32, 32)
    raw = pickle.load(open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb"), encoding="bytes")
    # pixel (0, 0, 0) of the first test image, unnormalised
    d2 = data.cifar10(tmp_path, normalize=False)
    assert d2.test.tensors[0][0, 0, 0, 0] == pytest.approx(raw[b"data"][0, 0] / 255.0)
    assert d2.test.tensors[1].tolist() == raw[b"labels"]
    assert len(data.cifar10(tmp_path, train_limit=7).train) == 7


def test_cifar10_errors_name_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*data_batch_1.*test_batch"):
        data.cifar10(tmp_path / "nowhere")
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_3"):
        data.cifar10(tmp_path)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    names = _write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / names[0], "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch file"):
        data.cifar10(tmp_path)


def test_synthetic_and_load():
    d = data.synthetic(60, input_shape=(2, 4), num_classes=3, seed=5)
    assert d.train.tensors[0].shape[1:] == (2, 4) and d.num_classes == 3
    assert torch.equal(d.train.tensors[0], data.synthetic(60, input_shape=(2, 4), num_classes=3, seed=5).train.tensors[0])
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; available: mnist1d"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="test_fraction"):
        data.digits(test_fraction=1.5)


def test_batch_is_a_fixed_probe():
    d = unravel.data.digits()
    x, y = d.batch(16)
    assert x.shape == (16, 1, 8, 8) and torch.equal(y, d.test.tensors[1][:16])


def test_image_folder_and_token_ids_from_disk(tmp_path):
    from PIL import Image

    from unravel import data

    for split in ("train", "test"):
        for c in ("a", "b", "c"):
            (tmp_path / "img" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((10, 10, 3), 20 * i, np.uint8)).save(tmp_path / "img" / split / c / f"{i}.png")
    d = data.image_folder(tmp_path / "img", image_size=8)
    assert (len(d.train), len(d.test), d.num_classes, d.input_shape) == (9, 9, 3, (3, 8, 8))
    ids = np.arange(500) % 37
    np.save(tmp_path / "ids.npy", ids)
    t = data.token_ids(tmp_path / "ids.npy", seq_len=10)
    x, y = t.train.tensors
    assert t.num_classes == 37 and x.shape[1] == 10 and torch.equal(x, y)
    assert torch.equal(torch.cat([x.flatten(), t.test.tensors[0].flatten()]), torch.as_tensor(ids))
    torch.save(torch.randn(5), tmp_path / "float.pt")
    with pytest.raises(unravel.errors.ArgumentError, match="integer array of token ids"):
        data.token_ids(tmp_path / "float.pt")
    with pytest.raises(unravel.errors.ArgumentError, match="no image folder"):
        data.image_folder(tmp_path / "nothing")


def test_cli_lesion_of_a_language_model_on_token_ids(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from unravel.cli import main

    cfg = transformers.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=40, n_positions=64,
                                  architectures=["GPT2LMHeadModel"])
    cfg.save_pretrained(tmp_path / "lm")
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 40, 600))
    out = tmp_path / "frame.csv"
    assert main(["lesion", f"hf:{tmp_path / 'lm'}", "--data", "token_ids", "--data-root",
                 str(tmp_path / "ids.npy"), "--epochs", "0", "--no-progress", "--out", str(out)]) == 0
    import pandas as pd

    frame = pd.read_csv(out)
    assert set(frame.per) == {"token"} and frame.error.between(0, 1).all() and len(frame) == 5  # 4 units + baseline
