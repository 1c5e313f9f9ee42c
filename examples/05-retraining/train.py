"""A tiny, real training run for a RetrainPolicy: a nearest-centroid classifier on the quality features of
each sample in the dataset version's manifest (train split), evaluated on the val and test splits.

It reads what every Loupe run receives (``LOUPE_MANIFEST_FILES``, ``LOUPE_RESULT_URI``, ...), writes its
model next to the result, and reports ``{"state", "modelUri", "metrics"}`` to ``LOUPE_RESULT_URI``.
Local paths and ``s3://`` URIs both work (S3 through boto3: credentials and ``AWS_ENDPOINT_URL`` from the
environment). Standard library, numpy and pyarrow only.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow.parquet as pq

FEATURES = ("brightness_p99", "brightness_p5", "sharpness", "noise", "entropy", "aspect_ratio")


def read(uri: str) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        import boto3

        body = boto3.client("s3").get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
        return bytes(body.read())
    return Path(uri).read_bytes()


def write(uri: str, data: bytes) -> None:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        import boto3

        boto3.client("s3").put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=data)
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)


def manifest_rows(files: list[str]) -> list[dict]:
    """The version's manifest: the rows of its Parquet files (LOUPE_MANIFEST_FILES, absolute URIs)."""
    rows: list[dict] = []
    for uri in files:
        rows.extend(pq.read_table(io.BytesIO(read(uri)), use_threads=False).to_pylist())
    return rows


def main() -> int:
    manifest = manifest_rows(json.loads(os.environ["LOUPE_MANIFEST_FILES"]))
    rows = [r for r in manifest if r.get("label") and all(r.get(f) is not None for f in FEATURES)]
    if not rows:
        write(
            os.environ["LOUPE_RESULT_URI"],
            json.dumps({"state": "Failed", "message": "no labelled samples"}).encode(),
        )
        return 1
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    labels = sorted({r["label"] for r in rows})
    y = np.array([labels.index(r["label"]) for r in rows])
    split = np.array([r.get("split") or "train" for r in rows])
    train = split == "train"
    centroids = np.stack(
        [
            x[train & (y == k)].mean(axis=0) if (train & (y == k)).any() else np.zeros(x.shape[1])
            for k in range(len(labels))
        ]
    )
    held_out = ~train if (~train).any() else train  # tiny datasets: evaluate on what there is
    predicted = np.argmin(((x[held_out, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    accuracy = float((predicted == y[held_out]).mean())
    result_uri = os.environ["LOUPE_RESULT_URI"]
    model_uri = result_uri.rsplit("/", 1)[0] + "/model.json"
    model = {
        "kind": "nearest-centroid",
        "features": FEATURES,
        "labels": labels,
        "centroids": centroids.tolist(),
        "dataset": os.environ["LOUPE_DATASET"],
        "version": os.environ["LOUPE_DATASET_VERSION"],
    }
    write(model_uri, json.dumps(model).encode())
    result = {
        "state": "Succeeded",
        "modelUri": model_uri,
        "metrics": {
            "accuracy": accuracy,
            "trainSamples": float(train.sum()),
            "evalSamples": float(held_out.sum()),
        },
        "message": f"accuracy {accuracy:.3f} on {int(held_out.sum())} held-out samples",
    }
    write(result_uri, json.dumps(result).encode())
    print(result["message"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
