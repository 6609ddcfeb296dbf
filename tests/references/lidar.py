"""Thilak et al., "LiDAR: Sensing Linear Probing Performance in Joint Embedding SSL Architectures", ICLR 2024,
Eqs. 1-4, written out term by term with NumPy loops and SciPy's matrix functions: each sample is a class, its
views (augmentations) are the members."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def lda_covariances(views, delta=1e-4):
    """``(Sigma_b, Sigma_w)`` of Eqs. 1-2 for ``views`` of shape ``(q, n, d)`` (q views of each of n samples)."""
    e = np.asarray(views, dtype=np.float64)
    q, n, d = e.shape
    mu_x = [e[:, x].mean(axis=0) for x in range(n)]  # the class (sample) means
    mu = sum(mu_x) / n
    sigma_b = sum(np.outer(m - mu, m - mu) for m in mu_x) / (n - 1)
    scatter = sum(np.outer(e[i, x] - mu_x[x], e[i, x] - mu_x[x]) for x in range(n) for i in range(q))
    sigma_w = scatter / (n * (q - 1)) + delta * np.eye(d)
    return sigma_b, sigma_w


def effective_rank(lam, eps=1e-8):
    """Eq. 4: ``exp`` of the entropy of ``p_i = (lambda_i + eps) / sum_j (lambda_j + eps)``."""
    lam = np.asarray(lam, dtype=np.float64)
    p = (lam + eps) / (lam + eps).sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def lidar_reference(views, delta=1e-4, eps=1e-8):
    """Eq. 3 as written: the eigenvalues of ``Sigma_w^{-1/2} Sigma_b Sigma_w^{-1/2}`` (SciPy's fractional power)."""
    sigma_b, sigma_w = lda_covariances(views, delta)
    root = np.real(scipy.linalg.fractional_matrix_power(sigma_w, -0.5))
    return effective_rank(np.linalg.eigvals(root @ sigma_b @ root).real, eps)


def lidar_generalized(views, delta=1e-4, eps=1e-8):
    """The same eigenvalues another way: the generalised symmetric problem ``Sigma_b v = lambda Sigma_w v``."""
    sigma_b, sigma_w = lda_covariances(views, delta)
    return effective_rank(scipy.linalg.eigh(sigma_b, sigma_w, eigvals_only=True), eps)
