"""The MODEL argument and the data options every analysing command shares, and what they build:
the model (its weights loaded, trained only where no weights were given or ``--epochs`` asks)
and the data split it is scored on. Every option is checked before data is loaded or a model
built; each choice that changes a result (training, the head, the split) is said on one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import ArgumentError
from .options import _count, _existing_file

__all__: list = []

#: The per-channel mean and standard deviation torchvision's and timm's ImageNet weights expect.
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SPLITS = ("test", "train", "all")
#: Epochs a model without weights trains for before it is measured (reference models: as before).
EPOCHS = 5


def _model_name(text: str) -> str:
    """A registered model name or a model string (checked when the model is built)."""
    from ..models.registry import model_names

    if text not in model_names() and ":" not in text:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; available: {', '.join(model_names())}, or "
                                         "torchvision:NAME, timm:NAME, hf:CONFIG_OR_DIR, package.module:factory")
    return text


def _normalize(text: str):
    if text in ("none", "imagenet"):
        return text
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) % 2 or not values or any(s <= 0 for s in values[len(values) // 2:]):
        raise argparse.ArgumentTypeError(f"{text!r}: give imagenet, none, or MEAN,STD (one value each, or one per "
                                         "channel: M1,M2,M3,S1,S2,S3; every STD > 0)")
    half = len(values) // 2
    return tuple(values[:half]), tuple(values[half:])


def add_model_args(q, *, analyses: bool = True) -> None:
    """The positional MODEL and the model and data options; ``analyses``: also the weights,
    head and split options of a command that measures a model (not ``train``)."""
    from ..data import DATASETS
    from ..models.registry import model_names

    q.usage = f"{q.prog} [MODEL] [options]"
    q.add_argument("model", nargs="?", default="resnet_cifar", type=_model_name, metavar="MODEL",
                   help=f"a reference model ({', '.join(model_names())}; default resnet_cifar) or yours: "
                        "torchvision:NAME, timm:NAME, hf:CONFIG_OR_DIR (a local config.json, or a folder saved with "
                        "save_pretrained), package.module:factory (the current directory is importable)")
    q.add_argument("--depth", type=_count(1), default=None,
                   help="depth of a reference model (default: the model's; 20 for the CIFAR nets, 22 for densenet_bc)")
    q.add_argument("--width", type=_count(1), default=None,
                   help="width of a reference model (growth rate for densenet_bc)")
    q.add_argument("--data", default="mnist1d", choices=list(DATASETS), metavar="NAME",
                   help=f"{', '.join(DATASETS)} (default mnist1d); image_folder and token_ids are your own files")
    q.add_argument("--data-root", default=None, metavar="PATH",
                   help="where the data's files are: a folder for mnist, cifar10 and image_folder (one sub-folder "
                        "per class), a .npy/.pt file or a folder of them for token_ids")
    q.add_argument("--image-size", type=_count(1), default=None,
                   help="image_folder: resize and centre-crop images to this size (default 32)")
    q.add_argument("--normalize", type=_normalize, default="none", metavar="imagenet|none|MEAN,STD",
                   help="image data: subtract the mean and divide by the std per channel (imagenet: the values "
                        "torchvision's weights expect; default none)")
    q.add_argument("--num-classes", type=_count(1), default=None,
                   help="classes of the model's head (default: the data's, or a --checkpoint's own head)")
    q.add_argument("--seed", type=_count(0), default=0)
    q.add_argument("--no-progress", action="store_true", help="no progress bars (transformers' own too)")
    if analyses:
        q.add_argument("--checkpoint", type=_existing_file, default=None,
                       help="load these weights (a state_dict saved with torch.save, a .safetensors file, or "
                            "`unravel train --save`); the model is then measured as it is")
        q.add_argument("--pretrained", action="store_true",
                       help="torchvision:/timm: models: their library's pretrained weights (from its local cache)")
        q.add_argument("--epochs", type=_count(0), default=None,
                       help=f"train this many epochs before measuring (default: none where weights are given, "
                            f"else {EPOCHS})")
        q.add_argument("--split", choices=SPLITS, default="test",
                       help="the split to measure on: test (default), train, or all of the data")


@dataclasses.dataclass
class Loaded:
    """What the options built: the model, the whole data split, the part of it measured."""

    model: object
    data: object
    scored: object  # a TensorDataset
    split: str
    tokens: bool

    def batch(self, n: int):
        x, y = self.scored.tensors
        return x[:n], y[:n]


def quiet(args) -> None:
    """``--no-progress`` silences transformers' bars as well as unravel's: through the variable
    huggingface_hub reads when it is imported, and directly where it is imported already (no
    import of transformers only for this)."""
    if not getattr(args, "no_progress", False):
        return
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()


def _importable_cwd() -> None:
    """``package.module:factory`` finds modules in the current directory, as ``python -m`` does."""
    import os

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _model_options(args) -> dict:
    from ..models import registry

    entry = registry.model_entry(args.model)
    options = {}
    depth = args.depth if args.depth is not None else entry.depth
    if depth is not None:
        options["depth"] = depth
    if args.width is not None:
        if entry.width is None:
            raise ArgumentError(f"--width: model {args.model!r} has no width to set")
        options[entry.width] = args.width
    if getattr(args, "pretrained", False):
        if not args.model.startswith(("torchvision:", "timm:")):
            raise ArgumentError(f"--pretrained: model {args.model!r} has no library weights; it applies to "
                                "torchvision:NAME and timm:NAME (give your own weights with --checkpoint)")
        if getattr(args, "checkpoint", None):
            raise ArgumentError("--pretrained and --checkpoint: give one source of weights")
        options["pretrained"] = True
    registry.check_model_arguments(args.model, options, complete=False)
    return options


def check(args) -> dict:
    """Check the model and data options (nothing loaded, nothing built); the model's options."""
    from .. import data

    _importable_cwd()
    quiet(args)
    options = _model_options(args)
    if args.data in data.ROOTED and not args.data_root:
        raise ArgumentError(f"--data {args.data} needs --data-root, the path of your files")
    if args.image_size is not None and args.data != "image_folder":
        raise ArgumentError(f"--image-size applies to --data image_folder, not {args.data}")
    if args.normalize != "none" and args.data in data.TOKENS:
        raise ArgumentError(f"--normalize applies to images, not the token ids of {args.data}")
    return options


def load_data(args):
    """The dataset the options name, resized (``--image-size``) and normalised (``--normalize``)."""
    from .. import study

    spec = {"data": args.data, "data_root": args.data_root}
    if args.image_size is not None:
        spec["data_options"] = {"image_size": args.image_size}
    d = study.load_data(spec)
    if args.normalize == "none":
        return d
    return _normalized(d, IMAGENET if args.normalize == "imagenet" else args.normalize)


def _normalized(d, mean_std):
    import torch
    from torch.utils.data import TensorDataset

    channels = d.input_shape[0]
    mean, std = (torch.tensor(v, dtype=torch.float32) for v in mean_std)
    if len(mean) not in (1, channels):
        raise ArgumentError(f"--normalize: {len(mean)} means for data with {channels} channels: give one value "
                            f"or {channels}")
    shape = (-1,) + (1,) * (len(d.input_shape) - 1)
    mean, std = mean.expand(channels).reshape(shape), std.expand(channels).reshape(shape)

    def norm(ds):
        x, y = ds.tensors
        return TensorDataset((x - mean) / std, y)

    return dataclasses.replace(d, train=norm(d.train), test=norm(d.test))


def _scored(d, split: str):
    import torch
    from torch.utils.data import TensorDataset

    if split == "all":
        return TensorDataset(*(torch.cat(t) for t in zip(d.train.tensors, d.test.tensors)))
    return getattr(d, split)


def load(args, *, default_epochs: int | None = EPOCHS, before_training=None) -> Loaded:
    """Check the options, load the data, build the model, load its weights or train it, and say
    which split is measured. ``before_training(model)`` checks what needs the model built."""
    from .. import data as data_mod
    from .weights import build_with_weights

    options = check(args)
    d = load_data(args)
    tokens = args.data in data_mod.TOKENS
    model, weighted = build_with_weights(args, d, options)
    if before_training is not None:
        before_training(model)
    epochs = args.epochs if args.epochs is not None else (0 if weighted else default_epochs or 0)
    if epochs:
        _train(args, model, d, epochs, weighted, tokens)
    split = getattr(args, "split", "test")
    scored = _scored(d, split)
    print(f"measuring on the {split} split of {d.name}: {len(scored):,} "
          f"{'sequences' if tokens else 'examples'} (train {len(d.train):,}, test {len(d.test):,})", file=sys.stderr)
    return Loaded(model, d, scored, split, tokens)


def _train(args, model, d, epochs, weighted, tokens) -> None:
    from .. import train

    if tokens:
        raise ArgumentError(f"training on {args.data} is not in these commands: give a trained language model "
                            "(hf:FOLDER saved with save_pretrained, or --checkpoint), or train one with "
                            "`unravel lm train --save DIR`")
    why = ("--epochs asks for it" if weighted or args.epochs else
           "no weights given: --checkpoint FILE or --pretrained to measure yours, --epochs 0 to skip")
    print(f"training {args.model} on {d.name} for {epochs} epochs first ({why})", file=sys.stderr)
    train.fit(model, d, epochs=epochs, optimizer="adam", lr=3e-3, seed=args.seed, progress=not args.no_progress)
