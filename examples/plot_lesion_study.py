"""
Deleting units: residual vs plain
=================================

Veit et al. (2016, Fig. 3) delete single units at test time: a ResNet barely notices, a plain
network of the same layers collapses. Here on MNIST-1D, with small nets trained for a few epochs.
"""

import matplotlib.pyplot as plt
import pandas as pd
import torch

import unravel

data = unravel.data.mnist1d(num_samples=2000)
frames, random = [], []
for name, build in [("residual", unravel.models.resnet_cifar), ("plain", unravel.models.plain_cifar)]:
    torch.manual_seed(0)
    net = build(14, width=8, in_channels=1, dims=1)
    unravel.train.fit(net, data, epochs=3, optimizer="adam", lr=3e-3, progress=False)
    frames.append(unravel.sweeps.delete_each(net, data, progress=False).assign(model=name))
    random.append(unravel.sweeps.delete_random(net, data, ks=[1, 2, 3, 4], samples_per_k=3,
                                               progress=False).assign(model=name))

# %%
# Error after deleting each single unit; dashed lines are the unlesioned errors.
each = pd.concat(frames)
unravel.plots.deletion_errors(each)
plt.show()
print(each.groupby("model").error.describe())

# %%
# Deleting k random units (Fig. 5a).
unravel.plots.error_vs_k(pd.concat(random))
plt.show()
