"""Embedding-space augmentation: EE (Ko & Gu, CVPR 2020) and SEE (Le & Woo, PAKDD 2024).

Pure tensor functions (`ee.py`, `see.py`) and the strategies that wrap them for the losses
(`strategy.py`: pair-based losses get EE's hard negative pair mining or SEE around batch
centroids, proxy-based losses SEE around proxies).
"""
from dml_core.expansion.ee import (
    BatchLayoutError,
    check_pair_layout,
    generate_synthetic,
    hard_negative_pair_mining,
)
from dml_core.expansion.see import (
    class_centroids,
    expand_around_centers,
    mmd_centers,
    see_threshold,
    select_for_expansion,
    spherical_expansion,
)

__all__ = [
    "BatchLayoutError",
    "check_pair_layout",
    "class_centroids",
    "expand_around_centers",
    "generate_synthetic",
    "hard_negative_pair_mining",
    "mmd_centers",
    "see_threshold",
    "select_for_expansion",
    "spherical_expansion",
]
