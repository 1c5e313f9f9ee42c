"""Setting, moving and removing tags. A tag is immutable once set: moving it to another version needs
``force``, and the move is kept in the tag's history, so "which data was production on 3 May" always
has an answer. Reading tags (``DATASET@production``) lives with the version lookups in versions.py."""

from __future__ import annotations

import json

from loupe_api.keys import tag_key
from loupe_api.tags import TagMove, TagRecord, tag_name_problem
from loupe_storage.store import ObjectStore
from loupe_workers.versioning.versions import read_tag, read_version, utcnow


class TagError(ValueError):
    """A tag that cannot be set or removed as asked; the message says what to do."""


class TagExists(TagError):
    """The tag names another version and force was not given."""


def _body(tag: TagRecord) -> bytes:
    return json.dumps(tag.to_wire(), indent=2, sort_keys=True).encode()


def set_tag(store: ObjectStore, dataset: str, version: str, name: str, *, force: bool = False) -> TagRecord:
    """Point tag ``name`` at ``version`` (which must exist). Setting it again to the same version changes
    nothing; to another version it raises TagExists unless ``force``, which records the move."""
    problem = tag_name_problem(name)
    if problem:
        raise TagError(problem)
    read_version(store, dataset, version)  # VersionNotFound, with a suggestion, for a wrong number
    tag = TagRecord(dataset=dataset, name=name, version=version, created=utcnow())
    if store.put_if_absent(tag_key(dataset, name), _body(tag)):
        return tag
    existing = read_tag(store, dataset, name)
    assert existing is not None  # tags are only removed by remove_tag
    if existing.version == version:
        return existing
    if not force:
        raise TagExists(
            f"tag {name} of {dataset} already names {existing.version} (since {existing.created.isoformat()}); "
            f"--force moves it to {version}"
        )
    moved = TagMove(version=existing.version, since=existing.created, until=tag.created)
    tag = tag.model_copy(update={"history": [*existing.history, moved]})
    store.put(tag_key(dataset, name), _body(tag))
    return tag


def remove_tag(store: ObjectStore, dataset: str, name: str) -> TagRecord:
    """Remove a tag; the versions stay. Raises TagError when there is no such tag."""
    existing = read_tag(store, dataset, name)
    if existing is None:
        raise TagError(f"dataset {dataset} has no tag {name} in {store.uri}")
    store.delete(tag_key(dataset, name))
    return existing
