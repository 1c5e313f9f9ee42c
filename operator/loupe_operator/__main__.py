"""``python -m loupe_operator``: run the operator (``kopf run -m loupe_operator.handlers`` works too)."""

from __future__ import annotations

import kopf

from loupe_operator import handlers


def main() -> None:
    settings = handlers.SETTINGS
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object",
    )
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )


if __name__ == "__main__":
    main()
