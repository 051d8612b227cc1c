"""Progress bars (issue 26): the exact attribution counts its batched VJPs in a tqdm bar; the
result is the same with or without it."""

import pytest
import torch

import unravel


class _Bar:
    made = []

    def __init__(self, *args, disable=False, **kwargs):
        self.n, self.disable, self.closed = 0, disable, False
        _Bar.made.append(self)

    def update(self, k=1):
        self.n += k

    def close(self):
        self.closed = True


@pytest.mark.parametrize("depth", [3, 5])
def test_attribution_ticks_once_per_batched_vjp(depth, monkeypatch):
    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", _Bar)
    _Bar.made.clear()
    net = unravel.models.resmlp(6, 3, width=8, depth=depth).double().eval()
    x, y = torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    quiet = unravel.attribution.path_length_gradients(net, x, y, chunk_size=1)
    shown = unravel.attribution.path_length_gradients(net, x, y, chunk_size=1, progress=True)
    assert torch.equal(quiet.by_length, shown.by_length)
    off, on = _Bar.made
    assert off.disable and not on.disable and on.closed
    # one channel per VJP: the unit l from the top (l = 1..n) receives l channels
    assert on.n == depth * (depth + 1) // 2
