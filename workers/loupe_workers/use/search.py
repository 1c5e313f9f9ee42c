"""Search a version: by example image, by a metadata filter expression, by text.

Text search with the built-in ImageNet model goes through its class names: the query and every
class name are embedded with all-MiniLM-L6-v2, each class is weighted by how close its name is to the
query (1 for the closest, falling off exponentially), and an image scores the probability it gives
to those classes (its top 10 predicted classes are stored with its embedding). A model registered
with a CLIP-style text tower is searched in its own joint space instead.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from loupe_api.common import camel_keys
from loupe_api.samples import SampleRow
from loupe_api.versions import VersionRecord
from loupe_storage.store import ObjectStore
from loupe_workers.embedding.embed import (
    EmbedConfig,
    Embedder,
    Embeddings,
    decode_for_model,
    ensure_embeddings,
)
from loupe_workers.embedding.models import (
    BUILTIN_MODEL,
    FloatArray,
    imagenet_classes,
    model_spec,
    text_encoder_of,
)
from loupe_workers.media import decode as media
from loupe_workers.storage.packaged import cache_dir
from loupe_workers.storage.rows import read_version_samples
from loupe_workers.versioning.versions import resolve_version

Record = SampleRow  # a manifest row, read through storage.rows


@dataclass(frozen=True)
class Hit:
    """One ranked result."""

    score: float
    sample_id: str
    sha256: str
    source: str
    key: str
    uri: str
    label: str | None
    split: str | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """camelCase keys, like every other JSON the CLI prints."""
        return camel_keys(asdict(self))


class SearchError(ValueError):
    """A query that cannot be answered (bad expression, no such version, no text model)."""


# --- metadata filter expressions ----------------------------------------------------------------

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def compile_filter(expression: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate over a sample's fields from an expression such as
    ``site == "plant-3" and width >= 640 and label in ["cat", "dog"] and not "blurry" in flags``.

    Only names, constants, lists, comparisons and and/or/not are allowed: nothing is executed.
    Unknown names are None; a comparison that cannot be made (None < 3) is false.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise SearchError(f"bad filter expression {expression!r}: {exc.msg}") from exc
    _check(tree.body, expression)

    def predicate(fields: dict[str, Any]) -> bool:
        return bool(_evaluate(tree.body, fields))

    return predicate


def filter_names(expression: str) -> set[str]:
    """The field names an expression reads (it must have compiled)."""
    tree = ast.parse(expression.strip(), mode="eval")
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def check_names(expression: str, rows: Sequence[Record]) -> None:
    """Refuse a filter naming a field that no sample has: it would silently match nothing (or all)."""
    known: set[str] = set()
    for row in rows:
        known.update(sample_fields(row))
    unknown = sorted(filter_names(expression) - known)
    if unknown and rows:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"the fields are {', '.join(sorted(known))}"
        raise SearchError(f"filter expression {expression!r}: no sample has a field {unknown[0]!r} ({hint})")


def _check(node: ast.AST, expression: str) -> None:
    allowed = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Name, ast.Load,
               ast.Constant, ast.List, ast.Tuple, *_COMPARE)  # fmt: skip
    for child in ast.walk(node):
        if not isinstance(child, allowed):
            raise SearchError(f"filter expression {expression!r}: {type(child).__name__} is not allowed")


def _evaluate(node: ast.AST, fields: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return fields.get(node.id)
    if isinstance(node, ast.List | ast.Tuple):
        return [_evaluate(e, fields) for e in node.elts]
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, fields)
        if isinstance(node.op, ast.Not):
            return not value
        return -value if isinstance(value, int | float) else None
    if isinstance(node, ast.BoolOp):
        values = (_evaluate(v, fields) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, fields)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, fields)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError:
                return False
            left = right
        return True
    raise SearchError(f"{type(node).__name__} is not allowed")  # unreachable after _check


def sample_fields(row: Record) -> dict[str, Any]:
    """What a filter sees: the manifest columns, with the metadata fields alongside."""
    fields = {k: v for k, v in row.items() if k != "metadata"}
    try:
        metadata = json.loads(row.get("metadata") or "{}")
    except ValueError:
        metadata = {}
    for name, value in metadata.items():
        fields.setdefault(name, value)
    fields["flags"] = list(row.get("flags") or [])
    return fields


# --- text through ImageNet class names ------------------------------------------------------------

LABEL_SYNONYMS = 3  # names per class embedded: the clean name and the first synonyms
CLASS_TEMPERATURE = 0.05


def class_texts() -> list[str]:
    return [", ".join(names[:LABEL_SYNONYMS]) for names in imagenet_classes()]


@cache
def class_vectors() -> FloatArray:
    """MiniLM vectors of the ImageNet class names, cached on disk (computing them takes a while)."""
    from loupe_workers.embedding import textmodel

    texts = class_texts()
    digest = hashlib.sha256(("\n".join(texts) + textmodel.MINILM.sha256).encode()).hexdigest()[:16]
    path = cache_dir() / f"imagenet-class-text-{digest}.npy"
    if path.is_file():
        cached: FloatArray = np.load(path)
        return cached
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths: little padding
    vectors = np.empty((len(texts), 384), dtype=np.float32)
    vectors[order] = textmodel.encode_texts([texts[i] for i in order])
    temp = path.with_name(f".{path.name}.tmp.npy")
    np.save(temp, vectors)
    temp.replace(path)
    return vectors


def class_text_scores(text: str, embeddings: Embeddings) -> tuple[FloatArray, list[str]]:
    """Score of each image for ``text`` and the class that contributed most to it."""
    from loupe_workers.embedding import textmodel

    if embeddings.classes.shape[1] == 0:
        raise SearchError("the model stores no class predictions: text search needs a text model")
    relevance = class_vectors() @ textmodel.encode_texts([text])[0]
    # Only the class names closest to the query count: a class 0.1 less similar than the best weighs
    # e^-2 as much, so a confident "moped" does not outrank a less confident "missile" for "rocket".
    weights = np.exp((relevance - relevance.max()) / CLASS_TEMPERATURE)
    classes = embeddings.classes.astype(np.int64)
    contributions = embeddings.probs * weights[classes]
    best = classes[np.arange(len(classes)), contributions.argmax(axis=1)] if len(classes) else classes[:, 0]
    names = imagenet_classes()
    return contributions.sum(axis=1).astype(np.float32), [names[c][0] for c in best.tolist()]


# --- the search -----------------------------------------------------------------------------------


def version_embeddings(
    store: ObjectStore, record: VersionRecord, model: str = BUILTIN_MODEL
) -> tuple[list[Record], Embeddings]:
    """A version's manifest rows and their embeddings under ``model`` (row order kept), computing
    (and storing) any that the version's runs did not."""
    rows = read_version_samples(store, record)
    result = ensure_embeddings(store, [r["sha256"] for r in rows], EmbedConfig(model=model))
    present = set(result.embeddings.sha256)
    kept = [r for r in rows if r["sha256"] in present]
    return kept, result.embeddings.select([r["sha256"] for r in kept])


def search(
    store: ObjectStore,
    dataset: str,
    version: str | None = None,
    *,
    image: bytes | None = None,
    text: str | None = None,
    where: str | None = None,
    limit: int = 10,
    model: str = BUILTIN_MODEL,
    min_score: float | None = None,
) -> list[Hit]:
    """Samples of a version ranked by similarity to ``image`` or relevance to ``text``, among those
    matching ``where``; with only ``where``, every match (score 1) in key order."""
    if image is None and text is None and where is None:
        raise SearchError("give an example image, a text, a filter expression, or several")
    try:
        record = resolve_version(store, dataset, version)
    except LookupError as exc:
        raise SearchError(str(exc)) from exc
    predicate = compile_filter(where) if where else None
    if image is None and text is None:
        rows = read_version_samples(store, record)
        if where:
            check_names(where, rows)
        matches = [r for r in rows if predicate is None or predicate(sample_fields(r))]
        matches.sort(key=lambda r: (r["source"], r["key"], r.get("frame_index") or 0))
        return [_hit(r, 1.0, "") for r in matches[:limit]]
    rows, embeddings = version_embeddings(store, record, model)
    if where:
        check_names(where, rows)
    if predicate is not None:
        keep = [i for i, r in enumerate(rows) if predicate(sample_fields(r))]
        rows = [rows[i] for i in keep]
        embeddings = embeddings.select([r["sha256"] for r in rows])
    scores = np.zeros(len(rows), dtype=np.float32)
    details = [""] * len(rows)
    if image is not None:
        scores += image_scores(image, embeddings, model)
    if text is not None:
        text_scores, details = text_scores_for(text, embeddings, model)
        scores += text_scores
    if image is not None and text is not None:
        scores /= 2
    order = np.argsort(-scores, kind="stable")
    hits = [_hit(rows[i], float(scores[i]), details[i]) for i in order.tolist()]
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    return hits[:limit]


def image_scores(image: bytes, embeddings: Embeddings, model: str = BUILTIN_MODEL) -> FloatArray:
    """Cosine similarity of every embedding to the example image."""
    embedder = Embedder(EmbedConfig(model=model))
    try:
        pixels = decode_for_model(
            image,
            embedder.size,
            max_pixels=media.DEFAULT_MAX_PIXELS,
            memory_limit=media.DEFAULT_MEMORY_LIMIT,
            crop=embedder.crop,
        )
    except Exception as exc:
        raise SearchError(f"cannot read the example image: {exc}") from exc
    query = embedder.infer(["query"], pixels[None]).vectors[0]
    scores: FloatArray = embeddings.vectors @ query
    return scores


def text_scores_for(
    text: str, embeddings: Embeddings, model: str = BUILTIN_MODEL
) -> tuple[FloatArray, list[str]]:
    encoder = text_encoder_of(model_spec(model))
    if encoder is not None:
        query = encoder([text])[0]
        scores: FloatArray = embeddings.vectors @ query  # cosine: both towers' vectors are unit length
        return scores, ["cosine"] * len(embeddings)
    scores, best = class_text_scores(text, embeddings)
    return scores, [f"as {name}" for name in best]


def _hit(row: Record, score: float, detail: str) -> Hit:
    return Hit(
        score=round(score, 6),
        sample_id=row["sample_id"],
        sha256=row["sha256"],
        source=row["source"],
        key=row["key"],
        uri=row["uri"],
        label=row.get("label"),
        split=row.get("split"),
        detail=detail,
    )


def hits_json(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [h.to_json() for h in hits]
