import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory):
    """Studies cache trained models; the tests keep theirs in a temporary folder."""
    import os

    old = os.environ.get("UNRAVEL_CACHE")
    os.environ["UNRAVEL_CACHE"] = str(tmp_path_factory.mktemp("unravel-cache"))
    yield
    if old is None:
        os.environ.pop("UNRAVEL_CACHE", None)
    else:
        os.environ["UNRAVEL_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def state_hash(model):
    """Bit-level fingerprint of a model's state dict."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def randomize_bn(model):
    """Non-trivial running statistics, so that eval-mode BN is not the identity."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


class TinyTransformer(torch.nn.Module):
    """A sequence classifier around nn.TransformerEncoder (either norm placement)."""

    def __init__(self, norm_first, d=16, layers=3, classes=4, ff=24):
        from torch import nn

        super().__init__()
        self.embed = nn.Linear(3, d)
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=ff, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.fc = nn.Linear(d, classes)

    def forward(self, x):
        return self.fc(self.encoder(self.embed(x)).mean(1))


def autograd_input_grad(model, x, y=None, loss=None):
    """Autograd's gradient of the loss at the first unit's input: the reference the exact
    decomposition's parts must sum to. ``loss(output, y)``; default cross-entropy."""
    import torch.nn.functional as F

    import unravel

    loss = loss or (lambda out, t: F.cross_entropy(out, t))
    leaf = {}

    def compute(unit, xin, position, **kw):
        if not leaf:  # the first unit that runs (find_units may list another first)
            xin = leaf.setdefault(0, xin.detach().requires_grad_())
        return unit.forward(xin, **kw)

    with unravel.intervene(model, compute=compute):
        value = loss(model(x), y)
    return torch.autograd.grad(value, leaf[0])[0]


def run_torchrun(script_text: str, tmp_path, out_name: str = "out.csv", nproc: int = 2):
    """Run ``script_text`` under ``torch.distributed.run`` with ``nproc`` local processes (on a free
    port, one thread each, this checkout first on the path); the script gets ``tmp_path/out_name``
    as its argument."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "dist.py"
    script.write_text(script_text)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                    "--master_addr=127.0.0.1", f"--master_port={port}", str(script), str(tmp_path / out_name)],
                   env=env, check=True, timeout=300)
