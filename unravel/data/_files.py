"""Data a user has on disk: a folder of images in torchvision's ``ImageFolder`` layout, and
token-id files (``.npy`` or ``.pt``) for language models. Read whole into memory, so they suit
analysis sets (thousands of examples), not training at scale; nothing checks the files' contents
beyond their shapes and types.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import ArgumentError
from .split import DataSplit, _split

__all__ = ["image_folder", "token_ids"]


def _image_arrays(folder: Path, image_size: int, classes: list[str] | None):
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    if classes is not None and ds.classes != classes:
        raise ArgumentError(f"{folder}: classes {ds.classes} differ from the training folder's {classes}.")
    if len(ds) == 0:
        raise ArgumentError(f"{folder}: no images found (expected one sub-folder of images per class).")
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs).numpy(), np.asarray(ys), ds.classes


def image_folder(root, image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Images in torchvision's ``ImageFolder`` layout (``root/<class>/<image>``), resized and
    centre-cropped to ``image_size``, as a :class:`DataSplit`.

    A ``root`` holding ``train/`` and ``test/`` (or ``val/``) sub-folders gives that split;
    otherwise a stratified split by ``seed``.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (root / c).mkdir()
    ...     for i in range(5):
    ...         Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    >>> d = image_folder(root, image_size=8)
    >>> d.num_classes, d.input_shape, len(d.train) + len(d.test)
    (2, (3, 8, 8), 10)
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ArgumentError(f"no image folder at {str(root)!r}: expected root/<class>/<image files>.")
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        x_tr, y_tr, classes = _image_arrays(root / "train", image_size, None)
        x_te, y_te, _ = _image_arrays(test_dir, image_size, classes)
    else:
        x, y, classes = _image_arrays(root, image_size, None)
        x_tr, x_te, y_tr, y_te = _split(x, y, test_fraction, seed)
    return DataSplit(f"image_folder:{root.name}", TensorDataset(torch.as_tensor(x_tr), torch.as_tensor(y_tr)),
                     TensorDataset(torch.as_tensor(x_te), torch.as_tensor(y_te)), len(classes),
                     tuple(x_tr.shape[1:]))


def _read_ids(path: Path) -> torch.Tensor:
    if path.suffix not in (".npy", ".pt"):
        raise ArgumentError(f"{path}: token ids come as .npy or .pt files.")
    try:
        if path.suffix == ".npy":
            ids = torch.as_tensor(np.load(path, allow_pickle=False))
        else:
            ids = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # numpy and torch raise many types on a damaged file or an object array
        raise ArgumentError(f"{path}: not an array of token ids that can be read without running code "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}).") from None
    if not torch.is_tensor(ids) or ids.is_floating_point() or ids.dtype == torch.bool:
        raise ArgumentError(f"{path}: expected an integer array of token ids, got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)}.")
    return ids.long()


def token_ids(root, seq_len: int = 64, test_fraction: float = 0.1, vocab_size: int | None = None) -> DataSplit:
    """Token ids from ``.npy``/``.pt`` files, cut into sequences of ``seq_len`` for next-token
    evaluation: inputs and targets are the same ids (``next_token=True`` in the sweeps shifts
    them).

    ``root`` is a file (one stream of ids, or an array ``[N, T]`` of sequences), or a folder
    holding ``train.*`` and ``test.*`` (else every file, in name order, as one stream). A stream's
    last ``test_fraction`` becomes the test split: a split by position, with no shuffling.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ids.npy"
    >>> np.save(path, np.arange(1000) % 50)
    >>> d = token_ids(path, seq_len=16)
    >>> d.num_classes, d.input_shape, len(d.train), len(d.test)
    (50, (16,), 56, 6)
    """
    root = Path(root).expanduser()
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ArgumentError(f"seq_len={seq_len!r} must be an integer >= 2.")

    def sequences(ids):
        if ids.dim() == 2:
            return ids
        if ids.dim() != 1:
            raise ArgumentError(f"token ids must be a stream [N] or sequences [N, T]; got shape {tuple(ids.shape)}.")
        n = ids.numel() // seq_len
        if n == 0:
            raise ArgumentError(f"{ids.numel()} token ids make no sequence of seq_len={seq_len}.")
        return ids[: n * seq_len].view(n, seq_len)

    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix in (".npy", ".pt"))
        named = {p.stem: p for p in files}
        if "train" in named and ("test" in named or "val" in named):
            train = sequences(_read_ids(named["train"]))
            test = sequences(_read_ids(named.get("test") or named["val"]))
        elif files:
            stream = torch.cat([_read_ids(p).flatten() for p in files])
            train, test = _by_position(sequences(stream), test_fraction)
        else:
            raise ArgumentError(f"no .npy or .pt files in {str(root)!r}.")
    elif root.is_file():
        train, test = _by_position(sequences(_read_ids(root)), test_fraction)
    else:
        raise ArgumentError(f"no token ids at {str(root)!r}: give a .npy/.pt file or a folder of them.")
    vocab = int(max(train.max(), test.max())) + 1 if vocab_size is None else int(vocab_size)
    if int(min(train.min(), test.min())) < 0 or int(max(train.max(), test.max())) >= vocab:
        raise ArgumentError(f"token ids must lie in 0..{vocab - 1} (vocab_size={vocab}).")
    return DataSplit(f"token_ids:{root.name}", TensorDataset(train, train.clone()), TensorDataset(test, test.clone()),
                     vocab, (train.shape[1],))


def _by_position(seqs: torch.Tensor, test_fraction: float):
    if not 0 < test_fraction < 1:
        raise ArgumentError(f"test_fraction={test_fraction!r}: must lie strictly between 0 and 1.")
    n_test = max(1, int(round(len(seqs) * test_fraction)))
    if n_test >= len(seqs):
        raise ArgumentError(f"{len(seqs)} sequences are too few to split off a test set.")
    return seqs[:-n_test], seqs[-n_test:]
