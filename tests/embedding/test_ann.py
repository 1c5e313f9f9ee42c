"""Embedding near duplicates: the persisted, incremental ANN index and the groups it gives the splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from loupe_api.dataset import DatasetSpec, DedupSpec, EmbeddingDedup, SourceRef
from loupe_api.ingest import IngestSourceSpec
from loupe_api.jobs import RunRequest
from loupe_storage.store import LocalStore
from loupe_storage.versions import list_versions
from loupe_workers.embedding import ann
from loupe_workers.pipeline.run import run_dataset
from loupe_workers.storage import manifest
from support.photos import TRANSFORMS, jpeg, photo


def planted(n: int, dim: int, seed: int) -> tuple[npt.NDArray[np.float32], set[tuple[int, int]]]:
    """Random unit vectors; every fifth one a slightly moved copy of the one before it."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    pairs = set()
    for i in range(1, n, 5):
        vectors[i] = vectors[i - 1] + rng.normal(scale=0.15, size=dim)
        pairs.add((i - 1, i))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, pairs


def brute(vectors: npt.NDArray[np.float32], threshold: float) -> set[tuple[int, int]]:
    sims = vectors @ vectors.T
    a, b = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(a.tolist(), b.tolist(), strict=True))


def test_pairs_match_brute_force_and_only_new_rows_are_searched() -> None:
    vectors, truth = planted(600, 64, seed=1)
    assert brute(vectors, 0.9) == truth
    ids = [f"s{i}" for i in range(len(vectors))]
    pairs, index = ann.near_pairs(None, ids[:400], vectors[:400], 0.9)
    assert {(a, b) for a, b, _ in pairs} == {p for p in truth if p[1] < 400}
    assert len(index) == 400
    graph, names = index.to_bytes()
    restored = ann.AnnIndex.from_bytes(graph, names)  # what the next version reads from storage
    later, grown = ann.near_pairs(restored, ids, vectors, 0.9)
    assert {(a, b) for a, b, _ in later} == {p for p in truth if p[1] >= 400}  # new rows only
    assert len(grown) == 600 and all(s >= 0.9 for _, _, s in later)


def test_stale_entries_are_ignored_and_a_mostly_stale_index_rebuilt() -> None:
    vectors, truth = planted(100, 32, seed=2)
    ids = [f"s{i}" for i in range(100)]
    _, index = ann.near_pairs(None, ids, vectors, 0.9)
    survivors = list(range(0, 30))  # 70 of 100 samples left the dataset
    pairs, rebuilt = ann.near_pairs(index, [ids[i] for i in survivors], vectors[survivors], 0.9)
    assert len(rebuilt) == 30 and rebuilt is not index
    assert {(a, b) for a, b, _ in pairs} == {p for p in truth if p[1] < 30}


ORIGINALS = ("chelsea", "coffee", "rocket", "astronaut", "horse", "coins")


@pytest.fixture(scope="module")
def near_dup_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunRequest]:
    """Originals and transformed copies; the first version has the originals and flips, the second the rest."""
    root = tmp_path_factory.mktemp("ann")
    images = root / "images"
    images.mkdir()
    for name in ORIGINALS:
        (images / f"{name}.jpg").write_bytes(jpeg(photo(name, 256)))
        (images / f"{name}_flip.jpg").write_bytes(jpeg(TRANSFORMS["flip"](photo(name, 256))))
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    spec = DatasetSpec(
        sources=[SourceRef(name="cams")],
        dedup=DedupSpec(embedding=EmbeddingDedup(threshold=0.8), action="flag"),
        splits={"train": 0.5, "val": 0.25, "test": 0.25},
    )
    request = RunRequest(dataset="photos", spec=spec, sources={"cams": source}, store_uri=str(root / "store"))
    first = run_dataset(request)
    assert first.created
    for name in ORIGINALS:
        for kind in ("crop75", "reframe"):
            (images / f"{name}_{kind}.jpg").write_bytes(jpeg(TRANSFORMS[kind](photo(name, 256))))
    second = run_dataset(request)
    assert second.created and second.version == "1.1.0"
    return root, request


def groups_of(root: Path, version: int = -1) -> dict[str, tuple[str | None, str | None]]:
    store = LocalStore(root / "store")
    record = list_versions(store, "photos")[version]
    rows = manifest.read_version_rows(store, record)
    return {r["key"]: (r["dup_group"], r["split"]) for r in rows}


def test_embedding_groups_catch_flips_crops_and_reframes_and_share_a_split(
    near_dup_store: tuple[Path, RunRequest],
) -> None:
    root, _ = near_dup_store
    groups = groups_of(root)
    for name in ("chelsea", "coffee", "rocket", "astronaut", "horse", "coins"):
        members = [k for k in groups if k.startswith(f"{name}.") or k.startswith(f"{name}_")]
        assert len(members) == 4
        assert len({groups[k][0] for k in members}) == 1 and groups[members[0]][0] is not None, name
        assert len({groups[k][1] for k in members}) == 1, f"{name} straddles splits"
    assert len({g for g, _ in groups.values()}) == 6  # distinct photos never merged


def test_hashes_alone_miss_what_embeddings_catch(
    near_dup_store: tuple[Path, RunRequest], tmp_path: Path
) -> None:
    root, request = near_dup_store  # the embedded store: its copies are all found
    embedded = list_versions(LocalStore(root / "store"), "photos")[-1].stats
    assert embedded.embedding_pairs > 0
    assert embedded.near_duplicates == 18  # 3 copies of each of 6 photos
    # flips, 75 % crops and re-framings (mirrored ones too) are found by hashes alone now; a re-framing
    # that keeps a third of the photo is not, and only embedding candidates (verified) reach it
    images = tmp_path / "images"
    images.mkdir()
    for name in ORIGINALS:
        (images / f"{name}.jpg").write_bytes(jpeg(photo(name, 256)))
        (images / f"{name}_reframe60.jpg").write_bytes(jpeg(TRANSFORMS["reframe60"](photo(name, 256))))
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(images)}})
    found: dict[str, set[str]] = {}
    for label, dedup in (("hashes", DedupSpec(action="flag")), ("embeddings", request.spec.dedup)):
        run = request.model_copy(
            update={
                "spec": request.spec.model_copy(update={"dedup": dedup}),
                "sources": {"cams": source},
                "store_uri": str(tmp_path / label),
            }
        )
        assert run_dataset(run).created
        record = list_versions(LocalStore(tmp_path / label), "photos")[-1]
        rows = manifest.read_version_rows(LocalStore(tmp_path / label), record)
        found[label] = {r["key"] for r in rows if r["duplicate_of"] and "_reframe60" in r["key"]}
    assert found["hashes"] < found["embeddings"], found


def test_index_is_persisted_per_version_and_grows_with_new_samples(
    near_dup_store: tuple[Path, RunRequest],
) -> None:
    root, _ = near_dup_store
    store = LocalStore(root / "store")
    first, second = list_versions(store, "photos")
    model = second.stats.embedding_model
    assert model is not None and first.stats.embedding_model == model
    one = ann.load_index(store, "photos", first.run_id, model)
    two = ann.load_index(store, "photos", second.run_id, model)
    assert one is not None and two is not None
    assert len(one) == 12 and len(two) == 24
    assert two.ids[:12] == one.ids  # the parent's rows kept, the new ones appended
    assert second.stats.embeddings_computed == 12  # only the new samples were embedded
    before = groups_of(root, 0)
    after = groups_of(root)
    assert all(after[k] == v for k, v in before.items())  # groups and splits are sticky
    assert json.loads(json.dumps(second.stats.to_wire()))["embeddingPairs"] >= 12
