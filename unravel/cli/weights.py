"""The model the options name, with its weights: ``--checkpoint`` (its own head kept, or a new
head of ``--num-classes``), ``--pretrained``, or an ``hf:`` folder that holds weights. Says on one
line when the head and the data's labels differ.
"""

from __future__ import annotations

import sys

from ..errors import ArgumentError, CheckpointError

__all__: list = []


def _head(model):
    """The name of the last ``nn.Linear`` (the classifier head), or None."""
    from torch import nn

    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _hf_weights(name: str) -> bool:
    from pathlib import Path

    if not name.startswith("hf:"):
        return False
    folder = Path(name[3:]).expanduser()
    return folder.is_dir() and any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))


def _build(args, d, options, num_classes):
    import torch

    from ..models import build_model

    torch.manual_seed(args.seed)
    extra = {} if num_classes is None else {"num_classes": num_classes}
    if not options.get("pretrained"):
        return build_model(args.model, d, **options, **extra)
    try:  # the weights' own head unless --num-classes asks for another
        return build_model(args.model, d if extra else tuple(d.input_shape), **options, **extra)
    except (OSError, RuntimeError, ValueError) as e:  # not in the cache and no network, or a head that differs
        raise ArgumentError(f"--pretrained: {args.model} could not load its library's weights "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); give --checkpoint "
                            "FILE instead") from e


def _say_head(model, d, whose) -> None:
    head = _head(model)
    classes = getattr(model.get_submodule(head), "out_features", None) if head else None
    if classes is None or classes == d.num_classes:
        return
    if d.num_classes > classes:
        raise ArgumentError(f"{whose} head has {classes} classes but {d.name} has labels up to {d.num_classes - 1}: "
                            f"give --num-classes {d.num_classes} (a new head, to train with --epochs N)")
    print(f"kept {whose} {classes}-class head: the {d.num_classes} labels of {d.name} are scored as classes "
          f"0..{d.num_classes - 1} of it (--num-classes {d.num_classes} gives a new head instead)", file=sys.stderr)


def build_with_weights(args, d, options):
    """``(model, weighted)``: the model built for ``d``, its weights loaded where the options
    give some (``weighted``)."""
    from .. import train

    checkpoint = getattr(args, "checkpoint", None)
    model = _build(args, d, options, args.num_classes)
    if not checkpoint:
        if options.get("pretrained") and args.num_classes is None:
            _say_head(model, d, "the pretrained")
        return model, bool(options.get("pretrained")) or _hf_weights(args.model)
    state = train.load(checkpoint)["state_dict"]
    own = model.state_dict()
    differ = [k for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    head = _head(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        what = [f"{len(missing)} tensors missing (such as {missing[0]!r})"] if missing else []
        what += [f"{len(unexpected)} unexpected (such as {unexpected[0]!r})"] if unexpected else []
        raise CheckpointError(f"{checkpoint!r} does not fit model {args.model!r}: {' and '.join(what)}; is it the "
                              "same architecture (--depth, --width)?")
    if not differ:
        train.load(checkpoint, model)
        return model, True
    if not set(differ) <= head_keys:
        shown = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in differ[:3])
        raise CheckpointError(f"{checkpoint!r} does not fit model {args.model!r}: {len(differ)} tensors differ in "
                              f"shape ({shown}); is it the same architecture (--depth, --width)?")
    classes = int(state[f"{head}.weight"].shape[0])
    if args.num_classes is None:  # keep the checkpoint's head; the data's labels are scored within it
        model = _build(args, d, options, classes)
        train.load(checkpoint, model)
        _say_head(model, d, "the checkpoint's")
        return model, True
    missing, _ = model.load_state_dict({k: v for k, v in state.items() if k not in head_keys}, strict=False)
    if set(missing) - head_keys:
        raise CheckpointError(f"{checkpoint!r} lacks {len(set(missing) - head_keys)} tensors of model "
                              f"{args.model!r} (such as {sorted(set(missing) - head_keys)[0]!r})")
    print(f"loaded {checkpoint} but its {classes}-class head: {head} is new, with {args.num_classes} classes and "
          "random weights (train it with --epochs N)", file=sys.stderr)
    return model, True
