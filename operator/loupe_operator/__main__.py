"""``python -m loupe_operator``: run the operator (``kopf run -m loupe_operator.handlers`` works too)."""

from __future__ import annotations

import logging
import secrets
import socket
from typing import Any, cast

import kopf

from loupe_operator import handlers


def _not_a_routine_poll(record: logging.LogRecord) -> bool:
    """Drop kopf's "Timer 'x' succeeded." lines: one per object per poll says nothing new."""
    message = record.getMessage()
    return not (message.startswith("Timer ") and message.endswith(" succeeded."))


def main() -> None:
    settings = handlers.SETTINGS
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    logging.getLogger("kopf.objects").addFilter(_not_a_routine_poll)
    # kopf freezes peers of equal priority: each replica draws its own, the highest works
    priority = secrets.randbelow(1_000_000) + 1
    # named here so that the start-up handler can announce this replica before kopf's watchers start
    handlers.PEER_IDENTITY = f"{socket.gethostname()}/{secrets.token_hex(4)}"
    kopf.run(
        identity=cast(Any, handlers.PEER_IDENTITY),  # kopf's Identity is a NewType of str it does not export
        standalone=settings.peering is None,
        peering_name=settings.peering,
        priority=priority if settings.peering else None,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )


if __name__ == "__main__":
    main()
