"""
A small GPT-2: its units, a lesion, and the path lengths of its loss gradient
=============================================================================

A transformer is a residual network with two units per layer (attention and MLP). A GPT-2 from
``transformers``, built from a tiny config (random weights, nothing downloaded), is recognised
with no adapter; deleting units and splitting its next-token loss gradient by path length work as
on a ResNet. Real text: files of the Python standard library, as bytes, and 150 steps of Adam.
"""

import sysconfig
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import transformers

import unravel

torch.manual_seed(0)
cfg = transformers.GPT2Config(n_embd=64, n_layer=4, n_head=4, vocab_size=256, n_positions=64, use_cache=False,
                              bos_token_id=0, eos_token_id=0)
lm = transformers.GPT2LMHeadModel(cfg)
print(unravel.unit_table(lm).to_string(index=False))

# bytes of the standard library's own source as token ids (a byte-level "tokenizer")
files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("[a-c]*.py"))
text = b"".join(p.read_bytes() for p in files)
stream = torch.tensor(list(text[: 4000 * 64]), dtype=torch.long).view(-1, 64)
train, ids = stream[:-32], stream[-32:]  # the last 32 sequences are held out
opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
for step in range(150):
    batch = train[torch.randint(0, len(train), (16,))]
    loss = lm(batch, labels=batch).loss  # next-token loss (transformers shifts the labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
lm.eval()
unravel.verify_units(lm, ids[:2])  # routing every layer through its units reproduces the model


# %%
# Deleting each unit in turn, scored per token (the output at t against byte t + 1).
frame = unravel.sweeps.delete_each(lm, (ids, ids), loss="next_token", progress=False)
print(frame[["variant", "names", "error", "loss", "per"]].to_string(index=False))

# %%
# The exact path-length decomposition of the next-token loss gradient (8 units: 2^8 paths).
res = unravel.attribution.path_length_gradients(lm, ids[:8], loss="next_token")
print("mean length", round(res.mean_length, 2), "of", len(res.lengths) - 1, "; effective paths",
      res.effective_paths(0.9))
unravel.plots.gradient_by_length(res.to_frame(), "norm")
plt.show()
