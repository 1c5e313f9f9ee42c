"""Leases that keep garbage collection and runs apart.

A run may rely on a blob or a manifest part that is already in the store (both are written only when
absent), so collecting while a run is in flight could delete something the run is about to reference.
Each run holds a lease (leases/<id>.json) from its start to its end; the collector takes the store-wide
lock (gc.lock.json) and then looks for leases. Each side writes its own marker before it looks for the
other's, so at least one of them sees the other: either the run waits for the collector, or the
collector leaves blobs and parts alone. A lease or lock older than STALE_SECONDS (a crashed process)
is ignored.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from loupe_api.keys import GC_LOCK, LEASES, lease_key
from loupe_storage.store import ObjectStore

STALE_SECONDS = 24 * 3600.0
GC_WAIT_SECONDS = 120.0  # how long a run waits for a collection to finish


class CollectionInProgress(RuntimeError):
    """The store is being garbage-collected and the collection did not finish in time."""


@dataclass(frozen=True)
class Marker:
    key: str
    started: float
    holder: str


def _body(what: str) -> bytes:
    holder = f"{what} pid {os.getpid()} on {socket.gethostname()}"
    return json.dumps({"started": time.time(), "holder": holder}).encode()


def _read(store: ObjectStore, key: str) -> Marker | None:
    try:
        data = json.loads(store.get(key))
        return Marker(key, float(data["started"]), str(data.get("holder", "")))
    except (KeyError, ValueError, TypeError):
        return None


def _fresh(marker: Marker | None, now: float) -> bool:
    return marker is not None and now - marker.started < STALE_SECONDS


def live_leases(store: ObjectStore) -> list[Marker]:
    """The leases of runs in flight (not stale)."""
    now = time.time()
    found = [_read(store, info.key) for info in store.list(LEASES)]
    return [m for m in found if m is not None and _fresh(m, now)]


@contextmanager
def run_lease(store: ObjectStore, dataset: str, *, wait: float | None = None) -> Iterator[None]:
    """Hold a lease for the duration of a run; waits (bounded) while a collection holds the lock."""
    wait = GC_WAIT_SECONDS if wait is None else wait
    key = lease_key(uuid.uuid4().hex)
    store.put(key, _body(f"run of {dataset}"))
    try:
        deadline = time.monotonic() + wait
        while _fresh(_read(store, GC_LOCK), time.time()):
            if time.monotonic() > deadline:
                raise CollectionInProgress(
                    f"{store.uri} is being garbage-collected (loupe gc) for more than {wait:.0f} s; run again later"
                )
            time.sleep(1.0)
        yield
    finally:
        store.delete(key)


@contextmanager
def gc_lock(store: ObjectStore) -> Iterator[bool]:
    """The store-wide collection lock. Yields whether blobs and parts may be swept: False while a run
    holds a lease. Raises CollectionInProgress when another collection holds the lock."""
    if not store.put_if_absent(GC_LOCK, _body("loupe gc")):
        other = _read(store, GC_LOCK)
        if _fresh(other, time.time()):
            holder = other.holder if other else "another process"
            raise CollectionInProgress(f"{store.uri} is already being garbage-collected by {holder}")
        store.put(GC_LOCK, _body("loupe gc"))  # a stale lock of a crashed collector
    try:
        yield not live_leases(store)
    finally:
        store.delete(GC_LOCK)
