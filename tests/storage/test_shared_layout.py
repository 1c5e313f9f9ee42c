"""One storage layout for operator and workers: ``loupe_storage`` is the only S3 client and the only
reader and writer of version records; the operator reads exactly what the workers commit."""

from __future__ import annotations

import ast
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loupe_api.common import credential_env_names
from loupe_api.dataset import DatasetStats
from loupe_api.ingest import IngestSourceSpec
from loupe_api.keys import version_key_of
from loupe_api.versions import VersionRecord
from loupe_operator.adapters.storage import StoreLocation, scan_source
from loupe_storage.store import AccessKeys, LocalStore, S3Store, StoreError, open_store
from loupe_storage.versions import CommitConflict, commit_version, latest_version, list_versions
from support.photos import jpeg, photo

REPO = Path(__file__).resolve().parents[2]
CREATED = datetime(2026, 1, 5, tzinfo=UTC)


def record(number: str, run_id: str = "run-1", dataset: str = "ns/cams") -> VersionRecord:
    return VersionRecord(dataset=dataset, version=number, created=CREATED, run_id=run_id, spec_digest="s",
                         source_digest="s", content_digest="c", code_version="0", manifest_uri="m",
                         rejected_uri="r", lineage_uri="l", samples=1, stats=DatasetStats())  # fmt: skip


def boto_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names
                  if n.split(".")[0] in ("boto3", "botocore", "mypy_boto3_s3")]  # fmt: skip
    return found


def test_only_loupe_storage_imports_boto3() -> None:
    """The operator's own S3 client is gone; the workers' is the shared one."""
    offenders = [
        hit for d in ("operator", "workers") for p in (REPO / d).rglob("*.py") for hit in boto_imports(p)
    ]
    assert not offenders, "reach S3 through loupe_storage.store:\n" + "\n".join(offenders)
    assert boto_imports(REPO / "api" / "loupe_storage" / "store.py")  # the scan does see the client


def test_no_copy_of_the_store_is_left_in_the_workers() -> None:
    assert not (REPO / "workers" / "loupe_workers" / "storage" / "store.py").exists()
    sources = [p for d in ("operator", "workers", "tests", "benchmarks") for p in (REPO / d).rglob("*.py")]
    old = ".".join(("loupe_workers", "storage", "store"))  # spelled apart so this file does not match
    stale = [str(p.relative_to(REPO)) for p in sources if old in p.read_text()]
    assert not stale, stale


def test_operator_reads_what_the_workers_commit_on_a_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    for number in ("1.2.0", "1.10.0", "1.0.0"):
        assert commit_version(store, record(number)) == (record(number), True)
    location = StoreLocation(str(tmp_path / "store"))
    assert [r.version for r in location.read_versions("ns/cams")] == ["1.0.0", "1.2.0", "1.10.0"]
    assert location.read_versions("ns/cams") == list_versions(store, "ns/cams")
    assert StoreLocation(f"file://{tmp_path / 'store'}").read_versions("ns/cams")[-1].version == "1.10.0"
    assert StoreLocation(str(tmp_path / "nothing-yet")).read_versions("ns/cams") == []
    assert location.read_optional("models/none.json") is None
    location.write("models/m.json", b"{}")
    assert store.get("models/m.json") == b"{}"
    assert not [p for p in (tmp_path / "store").rglob(".tmp-*")]


def test_latest_version_reads_only_the_newest_record(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    commit_version(store, record("1.1.0"))
    store.put(version_key_of("ns/cams", "1.0.0"), b"not a record")
    latest = latest_version(store, "ns/cams")
    assert latest is not None and latest.version == "1.1.0"
    with pytest.raises(ValueError):
        list_versions(store, "ns/cams")
    assert latest_version(store, "ns/other") is None


def test_commit_is_idempotent_per_run_and_refuses_another_run(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert commit_version(store, record("1.0.0"))[1] is True
    assert commit_version(store, record("1.0.0"))[1] is False  # a retry of the same run
    with pytest.raises(CommitConflict, match="committed by run run-1 while run run-2"):
        commit_version(store, record("1.0.0", run_id="run-2"))


def test_access_keys_are_never_printed_and_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = AccessKeys("AKIDEXAMPLE", "hunter2-secret")
    assert "hunter2" not in repr(keys)
    key_id, secret = credential_env_names("store-creds")
    monkeypatch.setenv(key_id, "from-env")
    monkeypatch.setenv(secret, "from-env-secret")
    from_env = open_store("s3://b/p", credentials_secret="store-creds")
    assert isinstance(from_env, S3Store) and from_env._credentials() == ("from-env", "from-env-secret")
    explicit = open_store("s3://b/p", credentials_secret="store-creds", access_keys=keys)
    assert isinstance(explicit, S3Store) and explicit._credentials() == ("AKIDEXAMPLE", "hunter2-secret")
    assert S3Store("b")._credentials() == (None, None)  # boto3's own chain
    assert pickle.loads(pickle.dumps(explicit))._client is None  # clients stay behind when Ray ships a store


@pytest.mark.s3
def test_operator_reads_s3_with_the_secret_keys(minio: Any, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:  # fmt: skip
    """The workers write with keys from the environment, the operator reads with keys from a Secret:
    the same client, the same records; wrong keys fail in one line without the secret."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bucket = minio.make_bucket("shared-layout")
    key_id, secret = credential_env_names("store-creds")
    monkeypatch.setenv(key_id, minio.access_key)
    monkeypatch.setenv(secret, minio.secret_key)
    workers = open_store(f"s3://{bucket}/loupe", endpoint=minio.endpoint, credentials_secret="store-creds")
    commit_version(workers, record("1.0.0"))
    commit_version(workers, record("1.1.0"))
    monkeypatch.delenv(key_id)
    monkeypatch.delenv(secret)

    secret_pair = {"access_key_id": minio.access_key, "secret_access_key": minio.secret_key}
    location = StoreLocation(f"s3://{bucket}/loupe", endpoint=minio.endpoint, credentials=secret_pair)
    assert [r.version for r in location.read_versions("ns/cams")] == ["1.0.0", "1.1.0"]
    assert location.read_optional("models/absent.json") is None
    location.write("models/m.json", b"{}")
    assert minio.client().get_object(Bucket=bucket, Key="loupe/models/m.json")["Body"].read() == b"{}"

    wrong = StoreLocation(f"s3://{bucket}/loupe", endpoint=minio.endpoint,
                          credentials={"access_key_id": minio.access_key, "secret_access_key": "wrong-secret"})  # fmt: skip
    with pytest.raises(StoreError) as denied:
        wrong.read_versions("ns/cams")
    message = str(denied.value)
    assert "S3 denied" in message and bucket in message and "\n" not in message
    assert "wrong-secret" not in message and minio.secret_key not in message

    # an IngestSource on S3 is listed by the same client, with the Secret's keys
    client = minio.client()
    client.put_object(Bucket=bucket, Key="cams/a.jpg", Body=jpeg(photo("coffee")))
    client.put_object(Bucket=bucket, Key="cams/notes.txt", Body=b"not media")
    source = IngestSourceSpec.model_validate(
        {"s3": {"bucket": bucket, "prefix": "cams", "endpoint": minio.endpoint}}
    )
    scan = scan_source("cams", source, secret_pair)
    assert (scan.objects, scan.bytes) == (1, len(jpeg(photo("coffee"))))


def test_scan_of_a_source_folder_lists_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg(photo("coffee")))
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    source = IngestSourceSpec.model_validate({"filesystem": {"path": str(tmp_path)}})
    first = scan_source("cams", source)
    assert first.objects == 2  # the dangling link counts: the job records it as unreadable
    (tmp_path / "b.jpg").write_bytes(jpeg(photo("astronaut")))
    second = scan_source("cams", source)
    assert second.objects == 3 and second.digest != first.digest
    with pytest.raises(FileNotFoundError):
        scan_source("cams", IngestSourceSpec.model_validate({"filesystem": {"path": str(tmp_path / "no")}}))
