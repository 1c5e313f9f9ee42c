"""OpenLineage events for dataset versions and training runs, so Marquez-like tools can read Loupe's lineage.

Off unless configured the openlineage-python way: ``OPENLINEAGE_URL`` (HTTP), ``OPENLINEAGE_CONFIG`` (an
openlineage.yml, e.g. a file transport) or ``OPENLINEAGE__TRANSPORT__*`` variables, such as
``OPENLINEAGE__TRANSPORT__TYPE=file`` with ``OPENLINEAGE__TRANSPORT__LOG_FILE_PATH=/var/log/lineage.jsonl``
and ``OPENLINEAGE__TRANSPORT__APPEND=true``. Emitting never fails the caller: lineage is reported, not
required.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from typing import Literal

NAMESPACE = os.environ.get("LOUPE_OPENLINEAGE_NAMESPACE", "loupe")
_RUN_NAMESPACE = uuid.UUID("6f1d0c4e-5b7a-4d38-9a7e-2f4b9c1e8d11")
logger = logging.getLogger(__name__)

State = Literal["START", "COMPLETE", "FAIL"]


def configured() -> bool:
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    return any(
        name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG") or name.startswith("OPENLINEAGE__TRANSPORT")
        for name in os.environ
    )


def run_id(name: str) -> str:
    """OpenLineage wants a UUID per run: derived from Loupe's run name, so START and COMPLETE agree."""
    return str(uuid.uuid5(_RUN_NAMESPACE, name))


def emit(
    job: str, run: str, state: State, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]
) -> bool:
    """One RunEvent; datasets are (namespace, name) pairs, e.g. ("s3://raw", "line-a/cam1.jpg")."""
    if not configured():
        return False
    try:
        from openlineage.client import OpenLineageClient
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState

        event = RunEvent(
            eventType=RunState[state],
            eventTime=datetime.now(UTC).isoformat(),
            run=Run(runId=run_id(run)),
            job=Job(namespace=NAMESPACE, name=job),
            inputs=[InputDataset(namespace=ns, name=name) for ns, name in inputs],
            outputs=[OutputDataset(namespace=ns, name=name) for ns, name in outputs],
            producer="https://github.com/loupe-dev/loupe",
        )
        OpenLineageClient().emit(event)
    except Exception as exc:  # a lineage backend that is down must not fail a run
        logger.warning("could not emit an OpenLineage event for %s: %s", job, exc)
        return False
    return True
