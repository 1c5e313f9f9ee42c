"""Reading YAML spec files into typed resources and run requests.

An invalid spec is refused before anything is written: every problem below raises ``SpecError``
naming the file (and document) and the field path, which ``loupe run`` prints in two lines with
exit code 2. What is refused, and why:

- Encoding. A spec is UTF-8 text (a UTF-8 byte-order mark is accepted and dropped). Other bytes,
  UTF-16 with a BOM (its first bytes are not UTF-8) and UTF-16 without one (valid UTF-8 full of NUL
  characters) are refused as ``FILE: not UTF-8 text``; the file is never decoded with the locale.
- Size and nesting. A file over ``MAX_SPEC_BYTES`` (1 MiB; Kubernetes refuses objects over about
  1.5 MiB, and a spec is a few KiB) is refused unread. Nesting deeper than ``MAX_DEPTH`` (64)
  levels is refused while composing, before Python's recursion limit is near (``[[[[...`` no longer
  ends in a RecursionError). Aliases are counted as what they expand to: a document whose expanded
  tree has more than ``MAX_NODES`` nodes or is deeper than ``MAX_DEPTH`` (billion laughs), or that
  refers to itself (``&a [*a]``), is refused before any Python object is built from it.
- Duplicate mapping keys, anywhere in a document: YAML says keys are unique and PyYAML silently
  keeps the last one, so a second ``threshold:`` would win unseen. Refused with the field path, the
  key's line and the line of the first one. Keys merged with ``<<`` may be overridden, as YAML
  intends.
- Duplicate resource names: two IngestSources (or Datasets, or RetrainPolicies) with the same
  ``metadata.name`` in the documents of a file or the files of a folder used to be last-one-wins
  (another folder was ingested than the one the user read first). Refused naming both places.
- Every field of a ``spec`` is typed strictly (see ``loupe_api.resources``): ``enabled: "yes"`` or
  ``threshold: true`` are refused instead of being read as True and 1.0.

A folder is read recursively for .yaml, .yml and .json files, skipping hidden folders (the embedded
store ``./.loupe`` holds JSON records that are no specs).

``check_local`` adds what only the embedded CLI can check, because on Kubernetes the paths are on
the cluster (the operator never calls it): a filesystem source folder that does not exist or is a
file, a label file (CSV, COCO) or YOLO label folder that does not exist, and an embedding model
(``spec.embedding.model``, ``spec.dedup.embedding.model``) that names a missing local ``.onnx`` file
or is neither a registered model nor a model URI. Paths resolve exactly as the run resolves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from loupe_api.dataset import Dataset
from loupe_api.ingest import IngestSource
from loupe_api.jobs import RunRequest
from loupe_api.resources import SpecError, parse_resource
from loupe_api.retrain import RetrainPolicy

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DocumentError(Exception):
    """A problem found in a composed document: (field path, message)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH while composing (it recurses per level)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check_node(node: Node, path: str, memo: dict[int, tuple[int, int]], active: set[int]) -> tuple[int, int]:
    """(expanded size, expanded height) of a node, aliases counted as what they expand to; refuses
    duplicate keys, self-reference and expansions over the limits. ``memo`` keeps this linear."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _DocumentError(path or "(document)", f"line {_line(node)}: an alias refers to itself")
    if isinstance(node, ScalarNode):
        memo[key] = (1, 1)
        return memo[key]
    active.add(key)
    size, height = 1, 0
    children: list[tuple[str, Node]] = []
    if isinstance(node, SequenceNode):
        children = [(_child_path(path, i), child) for i, child in enumerate(node.value)]
    elif isinstance(node, MappingNode):
        seen: dict[tuple[str, str], ScalarNode] = {}
        for key_node, value_node in node.value:
            children.append((path, key_node))
            if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                name = (key_node.tag, key_node.value)
                if name in seen:
                    raise _DocumentError(
                        _child_path(path, key_node.value),
                        f"duplicate key {key_node.value!r} at line {_line(key_node)} "
                        f"(first at line {_line(seen[name])})",
                    )
                seen[name] = key_node
                children.append((_child_path(path, key_node.value), value_node))
            else:
                children.append((path, value_node))
    for child_path, child in children:
        child_size, child_height = _check_node(child, child_path, memo, active)
        size += child_size
        height = max(height, child_height)
        if size > MAX_NODES:
            raise _DocumentError(
                path or "(document)",
                f"line {_line(node)}: expands to more than {MAX_NODES} values (aliases count as their copies)",
            )
    active.discard(key)
    if height + 1 > MAX_DEPTH:
        raise _DocumentError(
            path or "(document)",
            f"line {_line(node)}: nested deeper than {MAX_DEPTH} levels once aliases expand",
        )
    memo[key] = (size, height + 1)
    return memo[key]


def _yaml_message(exc: yaml.YAMLError) -> str:
    """One line: PyYAML's own messages span several lines, with a snippet of the document."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        return f"{where}{exc.problem or exc.context}{context}"
    return str(exc).splitlines()[0]


def read_documents(file: Path) -> list[tuple[str, Any]]:
    """The documents of one spec file as (where, data), ``where`` naming the file and the document;
    refuses what is not UTF-8, too large, too deep, expanding too far or holding duplicate keys."""
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(str(file), [("(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(str(file), [("(file)", f"larger than {MAX_SPEC_BYTES >> 20} MiB: not a spec")])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(file), [("(file)", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")]
        ) from exc
    if "\0" in text:
        raise SpecError(str(file), [("(file)", "not UTF-8 text (NUL characters: UTF-16?)")])
    loader = _SpecLoader(text)
    try:
        nodes: list[Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:  # None only at the end of the stream, which check_node rules out
                nodes.append(node)
        documents: list[tuple[str, Any]] = []
        for index, node in enumerate(nodes):
            where = str(file) if len(nodes) == 1 else f"{file} (document {index + 1})"
            try:
                _check_node(node, "", {}, set())
            except _DocumentError as exc:
                raise SpecError(where, [(exc.path, exc.message)]) from exc
            documents.append((where, loader.construct_document(node)))
    except yaml.YAMLError as exc:
        raise SpecError(str(file), [("(yaml)", _yaml_message(exc))]) from exc
    finally:
        loader.dispose()
    return documents


@dataclass
class SpecBundle:
    """Every resource found in a file or folder, and the folder relative paths resolve against."""

    base_dir: Path
    sources: dict[str, IngestSource] = field(default_factory=dict)
    datasets: dict[str, Dataset] = field(default_factory=dict)
    policies: dict[str, RetrainPolicy] = field(default_factory=dict)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> file (document)

    def origin(self, kind: str, name: str) -> str:
        """The file (and document) that defines a resource."""
        return self.origins.get((kind, name), str(self.base_dir))


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        # hidden folders are not specs: ./.loupe, the embedded store, holds JSON version records
        return sorted(
            p
            for p in path.rglob("*")
            if p.suffix in SPEC_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and p.is_file()
        )
    if not path.exists():
        raise SpecError(str(path), [("(file)", "no such file or folder")])
    return [path]


def load_specs(path: Path) -> SpecBundle:
    """Parse every document; raises SpecError naming the file, document and field of the first bad one."""
    bundle = SpecBundle(base_dir=(path if path.is_dir() else path.parent).resolve())
    for file in _files(path):
        for where, document in read_documents(file):
            if document is None:
                continue
            resource = parse_resource(document, where)
            name = resource.metadata.name
            first = bundle.origins.setdefault((resource.kind, name), where)
            if first != where:
                raise SpecError(
                    where, [(f"{resource.kind} {name}: metadata.name", f"already defined in {first}")]
                )
            if isinstance(resource, IngestSource):
                bundle.sources[name] = resource
            elif isinstance(resource, Dataset):
                bundle.datasets[name] = resource
            else:
                bundle.policies[name] = resource
    for dataset in bundle.datasets.values():
        missing = [ref.name for ref in dataset.spec.sources if ref.name not in bundle.sources]
        if missing:
            raise SpecError(
                bundle.origin("Dataset", dataset.metadata.name),
                [
                    (
                        f"Dataset {dataset.metadata.name}: spec.sources",
                        f"no IngestSource named {', '.join(missing)}",
                    )
                ],
            )
    return bundle


def _source_folder(source: IngestSource, base_dir: Path) -> Path:
    """The folder a filesystem source reads, resolved as ``sources.source_store`` resolves it."""
    assert source.spec.filesystem is not None
    path = Path(source.spec.filesystem.path).expanduser()
    return (path if path.is_absolute() else base_dir / path).resolve()


def _label_problem(source: IngestSource, folder: Path) -> str | None:
    """Why the label file (CSV, COCO) or YOLO label folder of a filesystem source cannot be read."""
    labels = source.spec.labels
    if labels is None or labels.format == "folder" or not labels.path:
        return None
    # annotate.load_labels reads the key from the source store; YOLO's folder key is stripped of "/"
    key = labels.path.strip("/") if labels.format == "yolo" else labels.path
    parts = PurePosixPath(key).parts
    if key.startswith("/") or ".." in parts:
        return f"{labels.path!r} is not a key inside the source folder {folder}"
    target = folder.joinpath(*parts)
    if labels.format == "yolo":
        return None if target.is_dir() else f"no such folder {target} (YOLO labels: a folder of .txt files)"
    return None if target.is_file() else f"no such file {target}"


def _model_problem(ref: str) -> str | None:
    """Why an embedding model cannot be loaded here: an unknown name, or a missing local .onnx file."""
    from loupe_workers.embedding.models import ModelError, model_spec

    if ref.startswith("s3://"):
        return None
    if not ref.endswith(".onnx"):
        try:
            model_spec(ref)  # a registered name: nothing is read
        except ModelError as exc:
            return str(exc)
        return None
    if "://" in ref and not ref.startswith("file://"):
        return f"unsupported model URI {ref!r}: use a path, file:// or s3:// URI of an .onnx file"
    path = Path(ref.removeprefix("file://"))  # as models._read_uri reads it: relative to the current folder
    if path.is_file():
        return None
    relative = "" if path.is_absolute() else " (relative model paths resolve against the current folder)"
    return f"no such file {path.resolve()}{relative}"


def check_local(bundle: SpecBundle) -> None:
    """What the embedded CLI must check before a run writes anything: source folders, label files
    and model files exist here. Not for the operator, whose paths are on the cluster. Every resource
    of the bundle is checked, as a parse error in any document refuses the whole bundle."""
    for name, source in sorted(bundle.sources.items()):
        if source.spec.filesystem is None:
            continue
        where = bundle.origin("IngestSource", name)
        folder = _source_folder(source, bundle.base_dir)
        if not folder.is_dir():
            problem = f"{folder} is not a folder" if folder.exists() else f"no such folder {folder}"
            raise SpecError(where, [(f"IngestSource {name}: spec.filesystem.path", problem)])
        label_problem = _label_problem(source, folder)
        if label_problem is not None:
            raise SpecError(where, [(f"IngestSource {name}: spec.labels.path", label_problem)])
    for name, dataset in sorted(bundle.datasets.items()):
        spec = dataset.spec
        models = [("spec.embedding.model", spec.embedding.model)]
        if spec.dedup.embedding is not None and spec.dedup.embedding.model is not None:
            models.append(("spec.dedup.embedding.model", spec.dedup.embedding.model))
        for field_path, ref in models:
            model_problem = _model_problem(ref)
            if model_problem is not None:
                where = bundle.origin("Dataset", name)
                raise SpecError(where, [(f"Dataset {name}: {field_path}", model_problem)])
        predictions = spec.sampling.predictions if spec.sampling is not None else None
        if predictions is not None:  # hardest-first sampling reads it; resolved as the run resolves it
            path = Path(predictions) if Path(predictions).is_absolute() else bundle.base_dir / predictions
            if not path.is_file():
                raise SpecError(bundle.origin("Dataset", name),
                                [(f"Dataset {name}: spec.sampling.predictions", f"no such file {path}")])  # fmt: skip


def run_request(bundle: SpecBundle, name: str, store_uri: str, *, commit: bool = True) -> RunRequest:
    dataset = bundle.datasets[name]
    spec = dataset.spec
    return RunRequest(
        dataset=name,
        spec=spec,
        sources={ref.name: bundle.sources[ref.name].spec for ref in spec.sources},
        store_uri=spec.storage.uri or store_uri,
        store_endpoint=spec.storage.endpoint,
        store_region=spec.storage.region,
        commit=commit,
    )
