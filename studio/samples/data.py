"""The sample data: scikit-learn's bundled handwritten digits (1797 real 8x8 images).

The split is fixed by a NumPy seed: 1297 training images and 500 evaluation images.
Pixels are scaled from 0..16 to 0..1 and shaped (N, 1, 8, 8). The images are also
kept in ``sample_models/digits.npz`` (written from scikit-learn by the training
script) so that loading a sample does not pay scikit-learn's import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0
N_EVAL = 500
DIGITS_NPZ = Path(__file__).resolve().parents[2] / "sample_models" / "digits.npz"

Split = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def digits_arrays_from_sklearn() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.uint8), digits.target.astype(np.uint8)


def write_digits_npz(path: Path = DIGITS_NPZ) -> None:
    images, labels = digits_arrays_from_sklearn()
    np.savez_compressed(path, images=images, labels=labels)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    if DIGITS_NPZ.exists():
        with np.load(DIGITS_NPZ, allow_pickle=False) as data:
            return data["images"], data["labels"]
    return digits_arrays_from_sklearn()


@lru_cache(maxsize=1)
def digits_split() -> Split:
    """((train_x, train_y), (eval_x, eval_y)) of the digits set, always the same split."""
    images, labels = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(labels, dtype=torch.int64)
    order = torch.from_numpy(np.random.RandomState(SPLIT_SEED).permutation(len(y)))
    eval_idx, train_idx = order[:N_EVAL], order[N_EVAL:]
    return (x[train_idx], y[train_idx]), (x[eval_idx], y[eval_idx])
