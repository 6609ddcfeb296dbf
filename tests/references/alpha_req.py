"""Agrawal, Mondal, Ghosh & Richards, "alpha-ReQ: Assessing Representation Quality in Self-Supervised Learning by
measuring eigenspectrum decay", NeurIPS 2022, written out with NumPy: the eigenvalues of the feature covariance,
sorted in decreasing order, and a least-squares line through (log rank, log eigenvalue); alpha is minus its slope."""

from __future__ import annotations

import numpy as np


def alpha_reference(x, first=1, last=None):
    """alpha over ranks ``first..last`` (1-based, inclusive; ``last=None``: every eigenvalue)."""
    x = np.asarray(x, dtype=np.float64)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x.T, bias=True)))[::-1]
    last = len(eig) if last is None else last
    ranks = np.arange(first, last + 1)
    slope, _ = np.polyfit(np.log(ranks), np.log(eig[first - 1 : last]), 1)
    return float(-slope)
