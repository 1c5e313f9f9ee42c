"""Loupe data plane.

The Python API (``loupe_workers.use.client``) is re-exported here lazily: ``import loupe_workers`` stays
free (the client pulls in pyarrow and the API models, about a second), and ``loupe_workers.open_dataset``
imports it on first use. Nothing is imported here, not even ``typing``: ``python -m loupe_workers``
and every CLI call pay for this module.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loupe_workers.use.client import (
        Dataset,
        DatasetNotFound,
        NotFound,
        Sample,
        SampleStream,
        Version,
        VersionNotFound,
        open_dataset,
    )

__all__ = [
    "Dataset",
    "DatasetNotFound",
    "NotFound",
    "Sample",
    "SampleStream",
    "Version",
    "VersionNotFound",
    "open_dataset",
]


def __getattr__(name: str) -> object:
    if name in __all__:
        from loupe_workers.use import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
