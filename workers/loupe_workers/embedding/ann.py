"""Approximate nearest neighbours over embeddings (faiss HNSW, inner product on unit vectors).

One index per version and model, stored with the version's other files::

    datasets/<name>/runs/<run id>/embedding-index/<model id>.faiss   the serialised HNSW graph
    datasets/<name>/runs/<run id>/embedding-index/<model id>.ids     sha256 of each row, one per line

A new version loads its parent's index, searches only its new samples against it (and each other),
then adds them: the work per version grows with the new samples, not with the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from loupe_api import keys
from loupe_storage.store import ObjectStore
from loupe_workers.embedding.models import FloatArray

HNSW_NEIGHBOURS = 32  # graph degree: recall above 0.99 at these sizes, memory 256 B per vector
EF_CONSTRUCTION = 80
EF_SEARCH = 64
NEIGHBOURS = 16  # candidates examined per query; a group larger than this is still joined transitively


@dataclass
class AnnIndex:
    """An HNSW index whose row i holds the embedding of ``ids[i]``."""

    dim: int
    ids: list[str] = field(default_factory=list)
    index: Any = None

    def __post_init__(self) -> None:
        if self.index is None:
            import faiss

            self.index = faiss.IndexHNSWFlat(self.dim, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.hnsw.efSearch = EF_SEARCH

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[str], vectors: FloatArray) -> None:
        if len(ids):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            self.ids.extend(ids)

    def search(self, vectors: FloatArray, k: int) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Similarities and rows of the k nearest stored vectors of each query (-1 rows: none)."""
        if not len(self.ids) or not len(vectors):
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        sims, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(k, len(self.ids)))
        return np.asarray(sims, np.float32), np.asarray(rows, np.int64)

    def to_bytes(self) -> tuple[bytes, bytes]:
        import faiss

        return bytes(faiss.serialize_index(self.index)), "\n".join(self.ids).encode()

    @staticmethod
    def from_bytes(graph: bytes, ids: bytes) -> AnnIndex:
        import faiss

        index = faiss.deserialize_index(np.frombuffer(graph, dtype=np.uint8))
        names = ids.decode().split("\n") if ids else []
        if index.ntotal != len(names):
            raise ValueError(f"index has {index.ntotal} vectors but {len(names)} ids")
        return AnnIndex(index.d, names, index)


index_keys = keys.index_keys  # the serialised graph and the row ids of a run's index


def load_index(store: ObjectStore, dataset: str, run_id: str, model: str) -> AnnIndex | None:
    """The index stored with a run (a committed version's run), or None."""
    graph_key, ids_key = index_keys(dataset, run_id, model)
    try:
        return AnnIndex.from_bytes(store.get(graph_key), store.get(ids_key))
    except (KeyError, ValueError):
        return None


def save_index(store: ObjectStore, dataset: str, run_id: str, model: str, index: AnnIndex) -> None:
    graph_key, ids_key = index_keys(dataset, run_id, model)
    graph, ids = index.to_bytes()
    store.put(ids_key, ids)
    store.put(graph_key, graph)


def near_pairs(
    index: AnnIndex | None,
    ids: Sequence[str],
    vectors: FloatArray,
    threshold: float,
    *,
    neighbours: int = NEIGHBOURS,
) -> tuple[list[tuple[int, int, float]], AnnIndex]:
    """Pairs (i, j, similarity) of ``ids`` rows at or above ``threshold``, at least one of them new.

    Rows already in ``index`` (the parent version's) were searched when they were added and are not
    searched again; new rows are added first, then searched against everything. Returns the pairs
    (i < j) and the index now holding every row. Entries whose id is no longer among ``ids`` are
    ignored; when they outnumber the live ones the index is rebuilt.
    """
    dim = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 1
    live = set(ids)
    reusable = index is not None and index.dim == dim and 2 * len(live & set(index.ids)) >= len(index)
    current = index if reusable and index is not None else AnnIndex(dim)
    known = set(current.ids)
    add = []
    for i, sha in enumerate(ids):
        if sha not in known:  # byte-identical copies share one row
            known.add(sha)
            add.append(i)
    current.add([ids[i] for i in add], vectors[add] if add else np.zeros((0, dim), np.float32))
    rows_by_id: dict[str, list[int]] = {}
    for i, sha in enumerate(ids):
        rows_by_id.setdefault(sha, []).append(i)
    added = {ids[i] for i in add}
    queries = [i for i, sha in enumerate(ids) if sha in added]
    pairs: set[tuple[int, int, float]] = set()
    if queries:
        sims, found = current.search(vectors[queries], neighbours + 1)
        for q, row_sims, row_found in zip(queries, sims.tolist(), found.tolist(), strict=True):
            for sim, row in zip(row_sims, row_found, strict=True):
                if row < 0 or sim < threshold:
                    continue
                for j in rows_by_id.get(current.ids[row], ()):
                    if j != q:
                        pairs.add((min(q, j), max(q, j), round(float(sim), 6)))
    unique: dict[tuple[int, int], float] = {}
    for a, b, sim in sorted(pairs):
        unique[(a, b)] = max(sim, unique.get((a, b), -1.0))
    return [(a, b, s) for (a, b), s in sorted(unique.items())], current
