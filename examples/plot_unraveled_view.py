"""
The unraveled view: 2^n paths
=============================

A residual network of n units is a collection of 2^n paths (Veit et al. 2016, Fig. 1). unravel
builds the graph of states and units and counts paths by length exactly, without enumerating
them.
"""

import matplotlib.pyplot as plt
import pandas as pd

import unravel

# %%
# Three units, every path spelled out, as in Veit et al. Fig. 1(b).
g3 = unravel.unravel(3)
g3.draw()
plt.show()

# %%
# ResNet-110 has 54 units and 2^54 paths; their lengths are Binomial(54, 1/2).
g = unravel.unravel(unravel.models.resnet_cifar(110))
print(g, g.length_counts()[:5])
g.draw()
plt.show()

# %%
# The length distributions of three depths side by side, from tidy frames.
frames = [unravel.unravel(unravel.models.resnet_cifar(d)).length_distribution().assign(model=f"ResNet-{d}")
          for d in (20, 56, 110)]
unravel.plots.path_length_distribution(pd.concat(frames), hue="model")
plt.show()

# %%
# A DenseNet's layers read every earlier layer of their block: the graph of states and layers.
unravel.unravel(unravel.models.densenet_bc(22, growth=4)).draw()
plt.show()
