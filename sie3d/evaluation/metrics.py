"""Evaluation metrics as pure functions on arrays: Fréchet distance, KID, identity similarity,
target-expression accuracy.

Conventions follow clean-fid / torch-fidelity so that numbers are comparable with published ones:

* feature statistics use the unbiased covariance (``np.cov``, divisor ``N - 1``);
* the Fréchet distance takes the real part of ``sqrtm(sigma1 @ sigma2)`` when the imaginary part
  is numerical noise, and adds ``eps * I`` to both covariances when the product is singular;
* KID is the unbiased MMD² estimate with the polynomial kernel ``k(x, y) = (gamma x·y + coef0)^degree``
  (``gamma = 1 / D`` by default), averaged over random subsets drawn without replacement.

The neutrality score (NPS, mean of ``-ln p_neutral``) lives with the emotion classifiers in
:mod:`sie3d.face.emotion` (``neutrality_score``); this module does not duplicate it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg


def _as_features(features: np.ndarray, name: str, min_rows: int = 1) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D] of feature vectors, got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} has {array.shape[0]} feature vectors; at least {min_rows} are needed")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set.

    Args:
        features: [N, D] with N >= 2.

    Returns:
        ``(mu [D], sigma [D, D])``; ``sigma`` uses the divisor ``N - 1`` (``np.cov``), like clean-fid.
    """
    features = _as_features(features, "features", min_rows=2)
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||² + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})``.

    Args:
        mu1, mu2: [D] means.
        sigma1, sigma2: [D, D] covariances (symmetric positive semi-definite).
        eps: added to both diagonals when ``sqrtm`` of the product is not finite (singular product,
            e.g. fewer samples than dimensions), as clean-fid does.

    Raises:
        ValueError: shapes disagree, or ``sqrtm`` has a non-negligible imaginary diagonal
            (|imag| > 1e-3), which means the covariances are not PSD.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be vectors of the same length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must be [{dim}, {dim}], got {sigma1.shape} and {sigma2.shape}")
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(dim) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has an imaginary component of "
                             f"{np.abs(covmean.imag).max():.3g}; are both covariances positive semi-definite?")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray, eps: float = 1e-6) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature sets [Na, D], [Nb, D]."""
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b, eps=eps)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma x·y + coef0)^degree`` for every pair: x [N, D], y [M, D] -> [N, M]; gamma defaults to 1/D."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel) -> float:
    """Unbiased MMD² of two equal-size samples x, y [m, D] (diagonals of k_xx, k_yy left out)."""
    m = x.shape[0]
    k_xx = polynomial_kernel(x, x, **kernel)
    k_yy = polynomial_kernel(y, y, **kernel)
    k_xy = polynomial_kernel(x, y, **kernel)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid(features_a: np.ndarray, features_b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD² over random subsets.

    Args:
        features_a: [Na, D]; features_b: [Nb, D].
        subsets: number of random subsets (torch-fidelity / clean-fid default 100).
        subset_size: samples per subset, capped at ``min(Na, Nb)`` (must end up >= 2).
        degree, gamma, coef0: kernel ``(gamma x·y + coef0)^degree``; ``gamma=None`` means ``1 / D``.
        seed: seed of the subset draws (without replacement, independently for a and b).

    Returns:
        ``(mean, std)`` of the per-subset MMD² estimates (std with divisor ``subsets``, like
        torch-fidelity). The estimate is unbiased, so it can be slightly negative for equal distributions.
    """
    a = _as_features(features_a, "features_a", min_rows=2)
    b = _as_features(features_b, "features_b", min_rows=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    m = min(a.shape[0], b.shape[0], subset_size)
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 samples, got subset_size={subset_size}")
    rng = np.random.default_rng(seed)
    kernel = dict(degree=degree, gamma=gamma, coef0=coef0)
    values = np.array([
        _mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)],
                       b[rng.choice(b.shape[0], m, replace=False)], **kernel)
        for _ in range(subsets)
    ])
    return float(values.mean()), float(values.std())


def identity_similarity(ref_embeddings: np.ndarray, render_embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of every reference embedding with every render embedding.

    Args:
        ref_embeddings: [R, D] (or [D]) identity embeddings of the input photo(s).
        render_embeddings: [V, D] (or [D]) embeddings of the renders, same encoder.

    Returns:
        [R, V] cosine similarities in [-1, 1] (inputs are normalised here, so they need not be).
    """
    ref = np.atleast_2d(np.asarray(ref_embeddings, np.float64))
    ren = np.atleast_2d(np.asarray(render_embeddings, np.float64))
    if ref.ndim != 2 or ren.ndim != 2 or ref.shape[1] != ren.shape[1]:
        raise ValueError(f"embeddings must be [R, D] and [V, D] with the same D, got {ref.shape} and {ren.shape}")
    norms_ref = np.linalg.norm(ref, axis=1, keepdims=True)
    norms_ren = np.linalg.norm(ren, axis=1, keepdims=True)
    if (norms_ref == 0).any() or (norms_ren == 0).any():
        raise ValueError("an embedding is all zeros; its cosine similarity is undefined")
    return (ref / norms_ref) @ (ren / norms_ren).T


def expression_accuracy(probs: np.ndarray, target: int | str | Sequence[int] | np.ndarray,
                        labels: Sequence[str] | None = None) -> float:
    """Fraction of images whose most probable class is the target expression.

    Args:
        probs: [N, K] class probabilities (K = 7 for the DeepFace/fer classes).
        target: one class for every image (an index, or a name looked up in ``labels``), or [N] indices.
        labels: the K class names in ``probs`` order; needed when ``target`` is a name.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be [N, K] with N >= 1, got shape {probs.shape}")
    if isinstance(target, str):
        if labels is None:
            raise ValueError(f"target {target!r} is a class name; pass labels= (the classifier's class names)")
        if target not in labels:
            raise ValueError(f"target expression {target!r} is not one of the classes {list(labels)}")
        target = list(labels).index(target)
    target = np.broadcast_to(np.asarray(target), (probs.shape[0],))
    if not np.issubdtype(target.dtype, np.integer) or (target < 0).any() or (target >= probs.shape[1]).any():
        raise ValueError(f"target indices must be integers in [0, {probs.shape[1]})")
    return float((probs.argmax(axis=1) == target).mean())
