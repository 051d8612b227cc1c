"""
A small Vision Transformer: deleting and swapping its units
===========================================================

torchvision's ``VisionTransformer`` holds two units per encoder block (attention and MLP).
Trained briefly on scikit-learn's 8x8 digits (upsampled to 16x16), it is lesioned as Veit et al.
lesion a ResNet: single deletions, then k random deletions.
"""

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from torchvision.models import VisionTransformer

import unravel

digits = unravel.data.digits()


def rgb16(ds):  # 1x8x8 -> 3x16x16, the input a ViT with 4x4 patches takes
    x, y = ds.tensors
    return TensorDataset(F.interpolate(x, size=16).repeat(1, 3, 1, 1), y)


data = unravel.data.DataSplit("digits16", rgb16(digits.train), rgb16(digits.test), 10, (3, 16, 16))
torch.manual_seed(0)
vit = VisionTransformer(image_size=16, patch_size=4, num_layers=4, num_heads=2, hidden_dim=32, mlp_dim=64,
                        num_classes=10)
unravel.train.fit(vit, data, epochs=8, optimizer="adam", lr=2e-3, progress=False)
print(unravel.unit_table(vit)[["index", "name", "block"]].to_string(index=False))

# %%
# Deleting each single unit (Veit Fig. 3 for a transformer).
each = unravel.sweeps.delete_each(vit, data, progress=False)
unravel.plots.deletion_errors(each.assign(model="ViT"))
plt.show()

# %%
# Deleting k random units (Fig. 5a): the error grows with k.
rnd = unravel.sweeps.delete_random(vit, data, ks=[1, 2, 4, 6], samples_per_k=5, progress=False)
unravel.plots.error_vs_k(rnd.assign(model="ViT"))
plt.show()
