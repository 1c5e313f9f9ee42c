"""Group, version and kind names of the Loupe API."""

from typing import Final

GROUP: Final = "loupe.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

KIND_INGEST_SOURCE: Final = "IngestSource"
KIND_DATASET: Final = "Dataset"
KIND_RETRAIN_POLICY: Final = "RetrainPolicy"

PLURALS: Final = {
    KIND_INGEST_SOURCE: "ingestsources",
    KIND_DATASET: "datasets",
    KIND_RETRAIN_POLICY: "retrainpolicies",
}
SHORT_NAMES: Final = {
    KIND_INGEST_SOURCE: ["isrc"],
    KIND_DATASET: ["lds"],
    KIND_RETRAIN_POLICY: ["rtp"],
}
