"""Bounded retries of transient refusals, shared by the operator (Ray Job Submission) and the workers
(embedded Ray start-up), so both treat "try again later" the same way.

A loaded Ray cluster answers a job submission with "No available agent to submit job, please try
again later" while its per-node agents start, and a local Ray can time out during start-up; both pass
within seconds. Anything else is raised at once: retrying a wrong address or a refused spec only hides it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Substrings (case-insensitive) of the messages of refusals that pass on their own.
TRANSIENT_MARKERS = (
    "no available agent",
    "please try again later",
    "timed out during startup",
    "failed to connect to gcs",  # a loaded machine: the head's control store is still starting
    "failed to connect to ray",
    "connection refused",
    "connection reset",
    "failed to establish a new connection",
    "max retries exceeded",
    "status code 502",  # the Ray Job SDK's words for a proxy or head that is (re)starting
    "status code 503",
    "status code 504",
)


class TransientRefusal(RuntimeError):
    """A refusal that stayed transient for every try: the caller reports it and tries later."""


def is_transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, ConnectionError | TimeoutError) or any(m in text for m in TRANSIENT_MARKERS)


def retry_transient(
    action: Callable[[], T],
    what: str,
    *,
    attempts: int = 6,
    first_delay: float = 1.0,
    max_delay: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """``action()``, tried up to ``attempts`` times while it fails transiently, waiting 1, 2, 4, ... s
    (at most ``max_delay``) in between: about 30 s in all by default. Raises TransientRefusal (the last
    error as its cause) when every try was refused, and any other error at once."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    waited = 0.0
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise TransientRefusal(
                    f"{what}: still refused after {attempts} tries over {waited:.0f} s: {exc}"
                ) from exc
            if on_retry is not None:
                on_retry(attempt, exc)
            delay = min(max_delay, first_delay * 2 ** (attempt - 1))
            sleep(delay)
            waited += delay
    raise AssertionError("unreachable")  # the loop returns or raises
