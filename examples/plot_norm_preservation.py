"""
Norm preservation
=================

Identity shortcuts keep the gradient norm nearly constant from unit to unit (TPAMI 2021): the
ratio ||dL/dx_l|| / ||dL/dx_{l+1}|| stays near 1. Residual and plain nets of the same layers.
"""

import matplotlib.pyplot as plt
import pandas as pd
import torch

import unravel

data = unravel.data.mnist1d(num_samples=1000)
x, y = data.batch(64)
rows = []
for name, build in [("residual", unravel.models.resnet_cifar), ("plain", unravel.models.plain_cifar)]:
    torch.manual_seed(0)
    net = build(20, width=8, in_channels=1, dims=1)
    unravel.train.fit(net, data, epochs=2, optimizer="adam", lr=3e-3, progress=False)
    rows.append(unravel.attribution.norm_ratios(net, x, y).assign(model=name))
frame = pd.concat(rows)
unravel.plots.norm_ratios(frame)
plt.show()
print(frame.groupby("model").ratio.describe())
