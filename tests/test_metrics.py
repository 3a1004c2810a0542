"""Metrics against closed forms and independent (slow, dense) reference implementations."""

import itertools

import numpy as np
import pytest

from sie3d.evaluation.metrics import (
    expression_accuracy,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    identity_similarity,
    kid,
)


def _random_spd(rng, dim, scale=1.0):
    a = rng.normal(size=(dim, dim))
    return scale * (a @ a.T / dim + 0.1 * np.eye(dim))


def _frechet_by_eigendecomposition(mu1, s1, mu2, s2):
    """tr((s1 s2)^{1/2}) = tr((s1^{1/2} s2 s1^{1/2})^{1/2}): symmetric PSD square roots via eigh only."""

    def psd_sqrt(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    root1 = psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross)


# --------------------------------------------------------------------------- Fréchet distance


def test_frechet_hand_computed_diagonal_case():
    # 25 + (1 + 4 - 2*2) + (4 + 9 - 2*6) = 27
    value = frechet_distance(np.array([0.0, 0.0]), np.diag([1.0, 4.0]), np.array([3.0, 4.0]), np.diag([4.0, 9.0]))
    assert value == pytest.approx(27.0, abs=1e-9)


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    dim = 16
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = rng.uniform(0.1, 3.0, dim), rng.uniform(0.1, 3.0, dim)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_one_dimensional_is_mean_plus_std_difference_squared():
    # W2² of 1-D Gaussians: (m1 - m2)² + (std1 - std2)²
    assert frechet_distance([1.5], [[4.0]], [-0.5], [[0.25]]) == pytest.approx(2.0**2 + 1.5**2)


def test_frechet_non_diagonal_matches_eigendecomposition_formula():
    rng = np.random.default_rng(1)
    for dim in (3, 32):
        mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
        s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim, scale=2.0)
        expected = _frechet_by_eigendecomposition(mu1, s1, mu2, s2)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-8)  # symmetric


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(2)
    mu, s = rng.normal(size=8), _random_spd(rng, 8)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9


def test_frechet_with_singular_covariances_stays_finite_and_close_to_the_psd_formula():
    # 4 samples in 12 dims: rank-3 covariances, the small-sample regime of per-avatar evaluation
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 12)), rng.normal(loc=0.5, size=(4, 12))
    value = frechet_distance_from_features(a, b)
    mu_a, s_a = feature_statistics(a)
    mu_b, s_b = feature_statistics(b)
    assert np.isfinite(value)
    assert value == pytest.approx(_frechet_by_eigendecomposition(mu_a, s_a, mu_b, s_b), rel=1e-3)


def test_frechet_rejects_mismatched_shapes_and_non_psd_input():
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="covariances must be"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -4.0]), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- statistics


def test_feature_statistics_hand_computed():
    features = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, [2.0, 4.0])
    # divisor N - 1 = 2: var0 = (4 + 0 + 4) / 2, var1 = (9 + 1 + 16) / 2, cov = (6 + 0 + 8) / 2
    np.testing.assert_allclose(sigma, [[4.0, 7.0], [7.0, 13.0]])
    mu1, sigma1 = feature_statistics(features[:, :1])
    assert sigma1.shape == (1, 1) and sigma1[0, 0] == pytest.approx(4.0)


def test_sample_statistics_and_frechet_converge_to_the_true_gaussians():
    rng = np.random.default_rng(4)
    dim, n = 6, 200_000
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim, scale=0.5)
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    mu_hat, s_hat = feature_statistics(x)
    assert np.abs(mu_hat - mu1).max() < 0.02
    assert np.abs(s_hat - s1).max() < 0.03
    expected = _frechet_by_eigendecomposition(mu1, s1, mu2, s2)
    assert frechet_distance_from_features(x, y) == pytest.approx(expected, rel=0.02)


def test_feature_statistics_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))


# --------------------------------------------------------------------------- KID


def _dense_kid_reference(x, y, degree=3, gamma=None, coef0=1.0):
    """Unbiased MMD² written pair by pair from its definition (O(n²) Python loops)."""
    m, dim = x.shape
    gamma = 1.0 / dim if gamma is None else gamma

    def k(u, v):
        return (gamma * float(np.dot(u, v)) + coef0) ** degree

    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    k_xx = sum(k(x[i], x[j]) for i, j in pairs) / len(pairs)
    k_yy = sum(k(y[i], y[j]) for i, j in pairs) / len(pairs)
    k_xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return k_xx + k_yy - 2 * k_xy


def test_kid_equals_dense_reference_when_the_subset_is_the_whole_set():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 5)), rng.normal(loc=0.3, scale=1.2, size=(12, 5))
    # subset_size is capped at 12 = N: every subset is a permutation of all samples, and the
    # unbiased statistic is permutation invariant, so every subset gives the same value
    mean, std = kid(x, y, subsets=5, subset_size=1000)
    assert mean == pytest.approx(_dense_kid_reference(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)
    mean2, _ = kid(x, y, subsets=1, subset_size=12, degree=2, gamma=0.5, coef0=0.25)
    assert mean2 == pytest.approx(_dense_kid_reference(x, y, degree=2, gamma=0.5, coef0=0.25), rel=1e-10)


def test_kid_subsets_are_averaged_dense_values():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(15, 4)), rng.normal(size=(9, 4))
    mean, std = kid(x, y, subsets=7, subset_size=6, seed=11)
    draws = np.random.default_rng(11)  # same draw order as kid(): a subset, then b subset
    values = [_dense_kid_reference(x[draws.choice(15, 6, replace=False)], y[draws.choice(9, 6, replace=False)])
              for _ in range(7)]
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)


def test_kid_of_identical_distributions_is_near_zero_and_positive_otherwise():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    z = rng.normal(loc=0.5, size=(400, 16))
    same, same_std = kid(x, y, subsets=20, subset_size=200)
    different, different_std = kid(x, z, subsets=20, subset_size=200)
    assert abs(same) < 3 * max(same_std, 1e-3)
    assert different > 10 * max(same_std, abs(same))


def test_kid_degree_two_matches_gaussian_closed_form():
    # for k(x, y) = (x·y + c)², E k(x, y) = tr(M1 M2) + 2c mu1·mu2 + c² with M = Sigma + mu muᵀ, so
    # MMD² = ||M1 - M2||_F² + 2c ||mu1 - mu2||²  (the estimator is unbiased)
    rng = np.random.default_rng(8)
    n, c = 20_000, 1.0
    mu1, mu2 = np.array([0.5, 0.0, -0.5]), np.array([0.0, 0.3, 0.0])
    s1, s2 = np.diag([1.0, 0.5, 0.8]), np.diag([0.6, 0.5, 1.2])
    m1, m2 = s1 + np.outer(mu1, mu1), s2 + np.outer(mu2, mu2)
    expected = np.sum((m1 - m2) ** 2) + 2 * c * np.sum((mu1 - mu2) ** 2)
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    mean, std = kid(x, y, subsets=8, subset_size=2000, degree=2, gamma=1.0, coef0=c)
    # one 2000-sample estimate has a spread of ~0.1 here; the mean of 8 is within ~3.5 sigma of 0.06 relative
    assert mean == pytest.approx(expected, rel=0.06)


def test_kid_input_errors():
    with pytest.raises(ValueError, match="dimensions differ"):
        kid(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2-D"):
        kid(np.zeros(3), np.zeros((3, 1)))


# --------------------------------------------------------------------------- ID and expression accuracy


def test_identity_similarity_is_cosine():
    ref = np.array([[3.0, 4.0]])
    renders = np.array([[3.0, 4.0], [-4.0, 3.0], [-6.0, -8.0], [1.0, 0.0]])
    np.testing.assert_allclose(identity_similarity(ref, renders), [[1.0, 0.0, -1.0, 0.6]], atol=1e-12)
    assert identity_similarity(ref[0], renders[0]).shape == (1, 1)
    with pytest.raises(ValueError, match="same D"):
        identity_similarity(ref, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="all zeros"):
        identity_similarity(ref, np.zeros((1, 2)))


def test_expression_accuracy():
    labels = ["angry", "happy", "neutral"]
    probs = np.array([[0.1, 0.7, 0.2], [0.2, 0.3, 0.5], [0.0, 0.9, 0.1], [0.6, 0.2, 0.2]])
    assert expression_accuracy(probs, "happy", labels) == pytest.approx(0.5)
    assert expression_accuracy(probs, 2) == pytest.approx(0.25)
    assert expression_accuracy(probs, np.array([1, 2, 1, 0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not one of the classes"):
        expression_accuracy(probs, "smug", labels)
    with pytest.raises(ValueError, match="labels="):
        expression_accuracy(probs, "happy")
    with pytest.raises(ValueError, match="integers in"):
        expression_accuracy(probs, 3)
