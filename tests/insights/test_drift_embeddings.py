"""The nearest-neighbour drift statistic on embeddings: exact where the full matrix is small, bounded memory
(chunked faiss searches, a seeded subset of queries) where it is not, and the same drift decision."""

from __future__ import annotations

import tracemalloc

import numpy as np
import numpy.typing as npt
import pytest

from loupe_api.dataset import DriftSpec
from loupe_workers.insights import analysis

Vectors = npt.NDArray[np.float32]


def exact_statistic(reference: Vectors, current: Vectors, k: int = 5) -> float:
    """The statistic from the full pooled similarity matrix (the computation knn_two_sample replaced)."""
    n1, n2 = len(reference), len(current)
    pooled = np.concatenate([reference, current]).astype(np.float32)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-12
    similarity = pooled @ pooled.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argpartition(-similarity, k, axis=1)[:, :k]
    group = np.r_[np.zeros(n1, dtype=bool), np.ones(n2, dtype=bool)]
    same = float((group[neighbours] == group[:, None]).mean())
    n = n1 + n2
    expected = (n1 * (n1 - 1) + n2 * (n2 - 1)) / (n * (n - 1))
    return float(max(0.0, (same - expected) / (1 - expected)))


def _samples(n1: int, n2: int, shift: float, dim: int = 32, seed: int = 0) -> tuple[Vectors, Vectors]:
    rng = np.random.default_rng(seed)
    reference = rng.normal(0, 1, (n1, dim)).astype(np.float32)
    current = rng.normal(0, 1, (n2, dim)).astype(np.float32)
    current[:, 0] += shift
    return reference, current


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0, 4.0])
def test_drift_statistic_equals_the_exact_one_when_every_sample_is_queried(shift: float) -> None:
    reference, current = _samples(400, 150, shift)
    value = analysis.knn_two_sample(reference, current)
    assert value == pytest.approx(exact_statistic(reference, current), abs=1e-9)
    # smaller chunks than there are samples: the same neighbours, the same value
    assert analysis.knn_two_sample(reference, current, chunk=64) == pytest.approx(value, abs=1e-12)


def test_drift_statistic_on_a_query_subset_stays_close_and_detects_a_shift() -> None:
    threshold = DriftSpec().threshold
    for shift, drifted in ((0.0, False), (2.0, True)):
        reference, current = _samples(3000, 1000, shift, seed=1)
        exact = exact_statistic(reference, current)
        values = [analysis.knn_two_sample(reference, current, max_queries=500, seed=s) for s in range(3)]
        assert all(v is not None and abs(v - exact) < 0.05 for v in values), (exact, values)
        assert (exact > threshold) == drifted
        assert all((v is not None and v > threshold) == drifted for v in values)


def test_drift_statistic_never_allocates_the_pooled_matrix() -> None:
    reference, current = _samples(3000, 1000, 1.0, dim=8, seed=2)
    n = len(reference) + len(current)
    whole = analysis.knn_two_sample(reference, current, chunk=n, max_queries=n)
    tracemalloc.start()
    chunked = analysis.knn_two_sample(reference, current, chunk=256, max_queries=n)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert chunked == pytest.approx(whole, abs=1e-12)
    assert peak < 4 * n * n / 20  # an n x n float32 matrix would be 64 MB; the search holds under 3.2 MB


def test_drift_statistic_with_exact_copies_and_tiny_sets() -> None:
    reference, current = _samples(200, 50, 0.0, seed=3)
    doubled = np.concatenate([reference, reference])  # every reference sample twice
    value = analysis.knn_two_sample(doubled, current)
    assert value is not None and 0.0 <= value <= 1.0
    assert analysis.knn_two_sample(reference[:1], current) is None
    assert analysis.knn_two_sample(reference[:2], current[:2]) is not None


def test_drift_on_shifted_embeddings_is_decided_as_before() -> None:
    reference, current = _samples(300, 120, 4.0, seed=4)
    rows_ref = [{"sha256": f"r{i}", "label": "a"} for i in range(len(reference))]
    rows_cur = [{"sha256": f"c{i}", "label": "a"} for i in range(len(current))]
    vectors = {f"r{i}": v for i, v in enumerate(reference)} | {f"c{i}": v for i, v in enumerate(current)}
    summary, full = analysis.drift(rows_ref, rows_cur, "1.0.0", DriftSpec(), vectors=vectors)
    assert summary.exceeded and summary.embedding == pytest.approx(exact_statistic(reference, current))
    assert full["embedding"] == summary.embedding and summary.top[0].startswith("embeddings")
    calm_ref, calm_cur = _samples(300, 120, 0.0, seed=5)
    vectors = {f"r{i}": v for i, v in enumerate(calm_ref)} | {f"c{i}": v for i, v in enumerate(calm_cur)}
    calm, _ = analysis.drift(rows_ref, rows_cur, "1.0.0", DriftSpec(), vectors=vectors)
    assert not calm.exceeded and calm.embedding is not None and calm.embedding < 0.1
