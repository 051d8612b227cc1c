"""
Which path lengths carry the gradient
=====================================

The exact decomposition splits the gradient at the first unit's input by path length; the
paper's estimator samples single paths. Both on a small residual net trained on MNIST-1D.
"""

import matplotlib.pyplot as plt
import pandas as pd
import torch

import unravel

data = unravel.data.mnist1d(num_samples=2000)
torch.manual_seed(0)
net = unravel.models.resnet_cifar(32, width=8, in_channels=1, dims=1)  # 15 units
unravel.train.fit(net, data, epochs=3, optimizer="adam", lr=3e-3, progress=False)
x, y = data.batch(64)

exact = unravel.attribution.path_length_gradients(net, x, y)
sample = unravel.attribution.path_length_gradients(net, x, y, method="sample", num_samples=20, generator=0)
print("parts sum to autograd's gradient; dropped:", exact.dropped_norm)
print("gradient-weighted mean length", round(exact.mean_length, 2), "of", len(exact.lengths) - 1, "units")
print("effective paths", exact.effective_paths(0.9))

# %%
# Per-path magnitude on a log scale (Veit Fig. 6a): it decays roughly exponentially.
frame = pd.concat([exact.to_frame(), sample.to_frame()])
unravel.plots.gradient_by_length(frame, "per_path_norm", window=exact.effective_paths(0.9)["lengths"])
plt.show()

# %%
# Total magnitude per length (Fig. 6b): few, short paths carry most of it.
unravel.plots.gradient_by_length(frame, "norm")
plt.show()
