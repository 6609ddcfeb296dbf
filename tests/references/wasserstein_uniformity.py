"""Fang, Li, Sun & Wang, "Rethinking the Uniformity Metric in Self-Supervised Learning", ICLR 2024: the quadratic
Wasserstein distance between the Gaussian fitted to the embeddings and N(0, I/m), from the general distance between
two Gaussians with SciPy's matrix square root. The covariance is divided by N, as in the authors' code
(``calc_wasserstein_distance``, github.com/statsle/WassersteinSSL); the paper's uniformity metric is minus it."""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg


def gaussian_w2(mu_1, sigma_1, mu_2, sigma_2):
    """W2 between N(mu_1, sigma_1) and N(mu_2, sigma_2): ``||mu_1 - mu_2||^2 + tr(sigma_1 + sigma_2 -
    2 (sigma_2^{1/2} sigma_1 sigma_2^{1/2})^{1/2})``, square-rooted."""
    root_2 = np.real(scipy.linalg.sqrtm(sigma_2))
    cross = np.real(scipy.linalg.sqrtm(root_2 @ sigma_1 @ root_2))
    squared = np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1 + sigma_2 - 2 * cross)
    return math.sqrt(max(float(squared), 0.0))


def w2_to_isotropic(x):
    """W2 between the Gaussian fitted to the rows of ``x`` (N, m) and N(0, I/m)."""
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    mu = x.mean(axis=0)
    sigma = (x - mu).T @ (x - mu) / n
    return gaussian_w2(mu, sigma, np.zeros(m), np.eye(m) / m)


def w2_closed_form(x):
    """The paper's simplified form: ``sqrt(||mu||^2 + 1 + tr(sigma) - 2 / sqrt(m) tr(sigma^{1/2}))``."""
    x = np.asarray(x, dtype=np.float64)
    n, m = x.shape
    mu = x.mean(axis=0)
    sigma = (x - mu).T @ (x - mu) / n
    root = np.real(scipy.linalg.sqrtm(sigma))
    return math.sqrt(max(float(mu @ mu + 1 + np.trace(sigma) - 2 / math.sqrt(m) * np.trace(root)), 0.0))
