"""The Python API (loupe_workers.use.client) over a store built by the real CLI from the quickstart."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pickle
import re
import shutil
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from loupe_storage.store import LocalStore, blob_key
from loupe_workers.ingest.demo import DemoFile
from loupe_workers.use import client
from loupe_workers.use.client import (
    DatasetNotFound,
    Sample,
    SampleStream,
    Version,
    VersionNotFound,
    open_dataset,
    shard_indices,
)
from support.cli import loupe

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "01-quickstart" / "loupe.yaml"
README = REPO / "README.md"
REMOVED = "textures/brick.jpg"  # dropped from the folder between the two versions


@pytest.fixture(scope="module")
def project(demo_master: tuple[Path, list[DemoFile]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quickstart built twice by `loupe run`: 1.0.0, then 2.0.0 with one photo removed."""
    root = tmp_path_factory.mktemp("client")
    shutil.copytree(demo_master[0], root / "images")
    shutil.copy(QUICKSTART, root / "loupe.yaml")
    for step in range(2):
        if step == 1:
            (root / "images" / REMOVED).unlink()
        done = loupe("run", "-f", "loupe.yaml", "--executor", "inline", "--json", cwd=root)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)[0]["created"], done.stdout
    return root


@pytest.fixture(scope="module")
def store(project: Path) -> Path:
    return project / ".loupe"


def manifest_files(store: Path, version: str) -> list[Path]:
    """The manifest's Parquet files found by hand: the parts its part list names (or the one file)."""
    record = json.loads((store / "datasets" / "defects" / "versions" / f"{version}.json").read_text())
    key = record["manifestUri"]
    if not key.endswith(".parts.json"):
        return [store / key]
    return [store / part["key"] for part in json.loads((store / key).read_text())["parts"]]


def manifest_rows(store: Path, version: str) -> list[dict[str, Any]]:
    """The manifest read by hand, as a training script had to before the API."""
    rows: list[dict[str, Any]] = pq.read_table(manifest_files(store, version)).to_pylist()
    return rows


def test_versions_oldest_first_and_current(store: Path) -> None:
    dataset = open_dataset("defects", str(store))
    records = dataset.versions()
    assert [r.version for r in records] == ["1.0.0", "2.0.0"]
    assert records[1].parent == "1.0.0"
    current = dataset.version()
    assert current.record == records[-1]
    old = dataset.version("1.0.0")
    assert old.record.version == "1.0.0"
    for version in (current, old):
        ids = [s.sample_id for s in version.samples()]
        assert len(ids) == version.record.samples == len(set(ids))
        assert sorted(ids) == sorted(r["sample_id"] for r in manifest_rows(store, version.record.version))
    removed = {s.sample_id for s in old.samples()} - {s.sample_id for s in current.samples()}
    assert {s.uri for s in old.samples() if s.sample_id in removed} == {
        str(store.parent / "images" / REMOVED)
    }
    # the package re-exports the API lazily
    import loupe_workers

    assert loupe_workers.open_dataset is open_dataset


def test_filters_by_split_label_flag_metadata(store: Path) -> None:
    version = open_dataset("defects", store).version()
    rows = manifest_rows(store, "2.0.0")
    everything = list(version.samples())
    assert all(isinstance(s, Sample) for s in everything)

    def ids(samples: Iterator[Sample]) -> set[str]:
        return {s.sample_id for s in samples}

    train = ids(version.samples(split="train"))
    assert train == {r["sample_id"] for r in rows if r["split"] == "train"} and train
    (split, label), _ = Counter((r["split"], r["label"]) for r in rows).most_common(1)[0]
    one = ids(version.samples(split=split, label=label))
    assert one == {r["sample_id"] for r in rows if r["split"] == split and r["label"] == label} and one
    other = next(r["label"] for r in rows if r["label"] != label)
    two = ids(version.samples(label=[label, other]))
    assert two == {r["sample_id"] for r in rows if r["label"] in (label, other)} and two > one
    noisy = ids(version.samples(flag="noise"))
    assert noisy == {r["sample_id"] for r in rows if "noise" in r["flags"]} and noisy
    assert ids(version.samples(flag="no-such-flag")) == set()
    frames = ids(version.samples(metadata={"frame_index": "0"}))
    assert frames == {r["sample_id"] for r in rows if json.loads(r["metadata"]).get("frame_index") == "0"}
    wide = ids(version.samples(where=lambda s: (s.width or 0) > (s.height or 0)))
    assert wide == {r["sample_id"] for r in rows if r["width"] > r["height"]} and wide
    arrow = version.to_arrow(columns=["sample_id"], filter=pc.field("split") == "train")
    assert set(arrow.column("sample_id").to_pylist()) == train


def test_json_columns_are_decoded(store: Path) -> None:
    version = open_dataset("defects", store).version()
    for sample in version.samples():
        assert isinstance(sample.metadata, dict) and sample.metadata["site"] == "demo-plant"
        assert isinstance(sample.labels, dict) and sample.labels["label"] == sample.label
        assert sample.boxes == [] and isinstance(sample.exif, dict)
        assert isinstance(sample.row["metadata"], dict) and isinstance(sample.row["labels"], dict)
    frame = version.to_pandas()
    assert len(frame) == version.record.samples
    for column in ("metadata", "labels", "exif"):
        assert all(isinstance(v, dict) for v in frame[column]), column
    assert set(frame["metadata"].map(lambda m: m["site"])) == {"demo-plant"}
    table = version.to_arrow()
    assert pa.types.is_struct(table.schema.field("metadata").type)
    assert pa.types.is_struct(table.schema.field("labels").type)
    site = version.to_arrow(filter=pc.field("metadata", "site") == "demo-plant")
    assert site.num_rows == version.record.samples
    raw = version.to_arrow(decode_json=False)
    assert pa.types.is_string(raw.schema.field("metadata").type)
    if importlib.util.find_spec("polars") is None:  # not a dependency: a clear message instead
        with pytest.raises(ImportError, match="pip install polars"):
            version.to_polars()
    else:
        assert version.to_polars().height == version.record.samples


def test_bytes_are_the_stored_blobs(store: Path) -> None:
    version = open_dataset("defects", store).version()
    for sample in version.samples():
        data = sample.read_bytes(verify=True)
        assert hashlib.sha256(data).hexdigest() == sample.sha256
        assert data == (store / blob_key(sample.sha256)).read_bytes()
        image = sample.open_image()
        assert sorted(image.size) == sorted((sample.width or 0, sample.height or 0))
        assert image.format is not None and image.format.lower() == sample.format


class CountingStore(LocalStore):
    """A folder store that counts blob reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.blob_reads: list[str] = []

    def get(self, key: str) -> bytes:
        if key.startswith("blobs/"):
            self.blob_reads.append(key)
        return super().get(key)


def test_torch_dataset_streams_lazily_and_shards_disjointly(store: Path) -> None:
    counting = CountingStore(store)
    version = open_dataset("defects", counting).version()
    stream = version.torch_dataset(split="train", decode=False)
    assert type(stream) is SampleStream  # torch is not installed: the plain iterable
    assert counting.blob_reads == []  # choosing the samples reads no bytes
    data, target = next(iter(stream))
    assert len(counting.blob_reads) == 1  # the first item read one blob, not the version
    first = stream.all_samples[0]
    assert hashlib.sha256(data).hexdigest() == first.sha256
    assert target == version.classes().index(first.label or "")

    train = [s.sample_id for s in version.samples(split="train")]
    assert [s.sample_id for s in stream.all_samples] == train and len(train) > 6
    for shards in (1, 2, 3, 5):
        parts = [
            version.torch_dataset(split="train", decode=False, num_shards=shards, shard=i)
            for i in range(shards)
        ]
        ids = [s.sample_id for p in parts for s in p.shard_samples()]
        assert sorted(ids) == sorted(train)  # complete and disjoint
        assert sum(len(p) for p in parts) == len(train)
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
        # DataLoader workers split each shard again, still disjointly and completely
        for part in parts:
            worker_ids = [s.sample_id for w in range(3) for s in part.shard_samples(w, 3)]
            assert sorted(worker_ids) == sorted(s.sample_id for s in part.shard_samples())
    read = Counter(
        hashlib.sha256(d).hexdigest()
        for p in range(2)
        for d, _ in version.torch_dataset(split="train", decode=False, num_shards=2, shard=p)
    )
    assert read == Counter(s.sha256 for s in version.samples(split="train"))
    with pytest.raises(ValueError, match="shard"):
        version.torch_dataset(num_shards=2, shard=2)
    assert list(shard_indices(7, 3, 1)) == [1, 4]


def test_iteration_follows_the_torch_worker(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = open_dataset("defects", store).version()
    stream = version.torch_dataset(split="train", transform=lambda image: image.size)
    monkeypatch.setattr(client, "_torch_worker", lambda: (1, 2))  # as get_worker_info() in worker 1 of 2
    items = list(stream)
    mine = stream.shard_samples(1, 2)
    assert len(items) == len(mine) < len(stream)
    classes = version.classes()
    for (size, target), sample in zip(items, mine, strict=True):
        assert sorted(size) == sorted((sample.width or 0, sample.height or 0))  # the transform got the image
        assert classes[target] == sample.label


def test_with_torch_it_is_an_iterable_dataset_sharded_by_worker_info(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch is not installed (its wheels pull CUDA): a stand-in torch.utils.data with the two names the
    client uses checks the subclassing, the worker-info sharding and pickling to DataLoader workers."""

    class IterableDataset:
        pass

    worker: list[Any] = [None]
    data = types.ModuleType("torch.utils.data")
    data.IterableDataset = IterableDataset  # type: ignore[attr-defined]
    data.get_worker_info = lambda: worker[0]  # type: ignore[attr-defined]
    for name, module in (
        ("torch", types.ModuleType("torch")),
        ("torch.utils", types.ModuleType("torch.utils")),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "torch.utils.data", data)
    client._torch_stream.cache_clear()
    try:
        version = open_dataset("defects", store).version()
        stream = version.torch_dataset(split="val", decode=False)
        assert isinstance(stream, IterableDataset) and isinstance(stream, SampleStream)
        assert type(stream) is client.TorchSampleStream
        assert type(pickle.loads(pickle.dumps(stream))) is type(stream)  # as a spawned worker gets it
        every = sorted(hashlib.sha256(d).hexdigest() for d, _ in stream)  # main process: worker info None
        assert every == sorted(s.sha256 for s in version.samples(split="val"))
        seen = []
        for wid in range(2):
            worker[0] = types.SimpleNamespace(id=wid, num_workers=2)
            seen.append([hashlib.sha256(d).hexdigest() for d, _ in stream])
        assert sorted(seen[0] + seen[1]) == every and not set(seen[0]) & set(seen[1])
    finally:
        client._torch_stream.cache_clear()


def test_restricted_samples_are_left_out_by_default(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    record = json.loads((copy / "datasets" / "defects" / "versions" / "2.0.0.json").read_text())
    part = manifest_files(copy, "2.0.0")[0]  # a part changed in place (readers do not check its sha256)
    table = pq.read_table(part)
    flags = table.column("flags").to_pylist()
    flags[0] = [*flags[0], "restricted:face"]
    restricted_id = table.column("sample_id")[0].as_py()
    table = table.set_column(
        table.schema.get_field_index("flags"), "flags", pa.array(flags, pa.list_(pa.string()))
    )
    pq.write_table(table, part)

    dataset = open_dataset("defects", copy)
    version = dataset.version()
    assert restricted_id not in {s.sample_id for s in version.samples()}
    assert version.to_arrow().num_rows == len(version.to_pandas()) == record["samples"] - 1
    assert restricted_id not in {s.sample_id for s in version.torch_dataset(decode=False).all_samples}
    allowed = dataset.version(allow_restricted=True)
    assert restricted_id in {s.sample_id for s in allowed.samples(flag="restricted:face")}
    assert (
        open_dataset("defects", copy, allow_restricted=True).version().to_arrow().num_rows
        == record["samples"]
    )


def test_unknown_dataset_and_version_name_the_store(store: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as missing:
        open_dataset("defcts", store)
    message = str(missing.value)
    assert isinstance(missing.value, LookupError) and "\n" not in message
    assert "defcts" in message and str(store) in message and "defects" in message
    with pytest.raises(VersionNotFound) as no_version:
        open_dataset("defects", store).version("9.9.9")
    message = str(no_version.value)
    assert isinstance(no_version.value, LookupError) and "\n" not in message
    assert "9.9.9" in message and str(store) in message and "1.0.0, 2.0.0" in message
    with pytest.raises(LookupError, match="no datasets there yet"):
        open_dataset("defects", tmp_path / "empty")


def test_same_api_on_s3(store: Path, minio: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = minio.make_bucket("client-api")
    s3 = minio.client()
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"team/store/{path.relative_to(store).as_posix()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    remote = open_dataset(
        "defects", f"s3://{bucket}/team/store", endpoint=minio.endpoint, region=minio.region
    )
    local = open_dataset("defects", store)
    assert [r.version for r in remote.versions()] == ["1.0.0", "2.0.0"]
    got = {s.sample_id: s.read_bytes(verify=True) for s in remote.version().samples(split="train")}
    assert got == {s.sample_id: s.read_bytes() for s in local.version().samples(split="train")}
    with pytest.raises(VersionNotFound, match=f"s3://{bucket}/team/store"):
        remote.version("3.0.0")


@pytest.mark.ray
def test_ray_dataset_yields_the_samples_and_their_bytes(store: Path, local_ray: None) -> None:
    version = open_dataset("defects", store).version()
    rows = version.ray_dataset(split="train", batch_size=4).take_all()
    expected = {s.sample_id: s for s in version.samples(split="train")}
    assert sorted(r["sample_id"] for r in rows) == sorted(expected)
    for row in rows:
        sample = expected[row["sample_id"]]
        assert row["bytes"] == sample.read_bytes() and row["label"] == sample.label
        assert hashlib.sha256(row["bytes"]).hexdigest() == row["sha256"] == sample.sha256
        assert row["metadata"]["site"] == "demo-plant"
    animals = version.ray_dataset(label="animals").take_all()
    assert {r["sample_id"] for r in animals} == {s.sample_id for s in version.samples(label="animals")}


def readme_api_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("### Python API\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_example_runs(project: Path) -> None:
    blocks = readme_api_blocks()
    assert blocks, "the README's Python API section has no python block"
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], cwd=project, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "['1.0.0', '2.0.0']" in done.stdout
        assert "objects {'site': 'demo-plant'}" in done.stdout  # the loop printed samples


def test_version_is_usable_from_a_record(store: Path) -> None:
    """Version is a plain object over (store, record): a custom ObjectStore works too."""
    opened = LocalStore(store)
    dataset = open_dataset("defects", opened)
    version = Version(opened, dataset.versions()[0])
    assert "defects@1.0.0" in repr(version)
    assert version.to_arrow(columns=["sample_id"]).num_rows == version.record.samples
    assert io.BytesIO(next(version.samples()).read_bytes()).getbuffer().nbytes > 0
