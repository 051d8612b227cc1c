"""What Veit, Wilber & Belongie (NeurIPS 2016) report for each quantity the Veit studies measure:
the entries shown beside our estimates (registered when the study is loaded)."""

__all__ = ["VEIT", "PAPERS"]

VEIT = "Veit, Wilber & Belongie, NeurIPS 2016"

#: Claim id -> the paper's ``where``, ``value`` and ``note`` (see :func:`unravel.study.register_paper`).
PAPERS = {
    "single-deletions": {"where": f"{VEIT}, Sec. 4.1, Fig. 3(a)", "value": None,
                         "note": "ResNet-110 on CIFAR-10: deleting any single non-downsampling block leaves the "
                                 "test error close to the unlesioned network's; downsampling blocks hurt more"},
    "single-deletions-vs-plain": {"where": f"{VEIT}, Sec. 4.1, Fig. 3(a)", "value": None,
                                  "note": "VGG-15 on CIFAR-10: deleting any single layer drops it to chance "
                                          "(error about 0.9), unlike ResNet-110"},
    "smooth-growth": {"where": f"{VEIT}, Sec. 4.2, Fig. 5(a)", "value": None,
                      "note": "ResNet-110 on CIFAR-10: the error grows smoothly as more blocks are deleted"},
    "reorder-smooth": {"where": f"{VEIT}, Sec. 4.3, Fig. 5(b)", "value": None,
                       "note": "ResNet-110 on CIFAR-10: the error grows smoothly as more blocks are swapped "
                               "(Kendall's tau falls)"},
    "projection-units": {"where": f"{VEIT}, Sec. 4.1, Fig. 3", "value": None,
                         "note": "deleting a downsampling block hurts more than deleting another block"},
    "exponential-decay": {"where": f"{VEIT}, Sec. 5.2, Fig. 6(b)", "value": None,
                          "note": "ResNet-110: the gradient magnitude of a path decreases exponentially with the "
                                  "number of blocks it goes through"},
    "mean-length": {"where": f"{VEIT}, Sec. 5.3, Fig. 6(c)", "value": None,
                    "note": "ResNet-110 (54 blocks): almost all of the gradient comes from paths 5 to 17 blocks "
                            "long, while the typical path is 27 long"},
    "effective-fraction": {"where": f"{VEIT}, Sec. 5.3", "value": 0.0045,
                           "note": "ResNet-110 (54 blocks): the effective paths, 5 to 17 blocks long, are 0.45% "
                                   "of all paths"},
    "window-stays": {"where": f"{VEIT}, Sec. 5.3", "value": None,
                     "note": "the effective paths are relatively shallow: short compared with the network's depth"},
}
