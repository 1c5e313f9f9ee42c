"""One home for every storage key: no module but loupe_api.keys builds a key of the object store."""

from __future__ import annotations

import ast
from pathlib import Path

from loupe_api import keys

REPO = Path(__file__).resolve().parents[2]
ROOTS = (keys.BLOBS, keys.DATASETS, keys.EMBEDDINGS, keys.MODELS, keys.RETRAIN, keys.LEASES, keys.GC_LOCK)
HOME = REPO / "api" / "loupe_api" / "keys.py"


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            found.add(id(first.value))
    return found


def key_literals(path: Path) -> list[str]:
    """String literals (and f-string heads) that start like a store key."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
        if text is not None and text.startswith(ROOTS):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {text!r}")
    return found


def test_only_the_keys_module_spells_storage_keys() -> None:
    sources = [p for d in ("api", "operator", "workers") for p in (REPO / d).rglob("*.py") if p != HOME]
    offenders = [hit for path in sources for hit in key_literals(path)]
    assert not offenders, "build storage keys with loupe_api.keys:\n" + "\n".join(offenders)
    assert key_literals(HOME)  # the scan does see keys where they are spelled


def test_keys_are_the_documented_layout() -> None:
    sha = "ab" + "0" * 62
    assert keys.blob_key(sha) == f"blobs/sha256/ab/{sha}"
    assert keys.version_key_of("d", "1.2.3") == "datasets/d/versions/1.2.3.json"
    assert keys.VERSION_RECORD.fullmatch(keys.version_key_of("ns/d", "1.2.3"))
    assert keys.manifest_part_key(keys.dataset_prefix("d"), sha) == f"datasets/d/parts/{sha}.parquet"
    assert keys.index_keys("d", "r", "m") == ("datasets/d/runs/r/embedding-index/m.faiss",
                                              "datasets/d/runs/r/embedding-index/m.ids")  # fmt: skip
    assert keys.embedding_models(["embeddings/m1/parts/x.parquet", "embeddings/m2/parts/y", "other"]) == [
        "m1", "m2"]  # fmt: skip
