"""The real MinIO server the S3 tests run against: it starts, serves S3, and honours conditional writes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from support.minio_server import MinioServer

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def minio() -> Iterator[MinioServer]:
    with MinioServer() as server:
        yield server


def _error_code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def test_put_and_get_object(minio: MinioServer) -> None:
    bucket = minio.make_bucket("loupe-basic")
    assert minio.make_bucket("loupe-basic") == bucket  # idempotent
    s3 = minio.client()
    s3.put_object(Bucket=bucket, Key="images/a.jpg", Body=b"\xff\xd8payload")
    assert s3.get_object(Bucket=bucket, Key="images/a.jpg")["Body"].read() == b"\xff\xd8payload"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="images/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["images/a.jpg"]


def test_conditional_put_if_none_match_refuses_existing_key(minio: MinioServer) -> None:
    """Loupe commits a dataset version with ``If-None-Match: *``: exactly one writer may win."""
    bucket = minio.make_bucket("loupe-cas")
    s3 = minio.client()
    s3.put_object(Bucket=bucket, Key="versions/v1.json", Body=b"first", IfNoneMatch="*")

    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=bucket, Key="versions/v1.json", Body=b"second", IfNoneMatch="*")
    assert _error_code(info.value) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="versions/v1.json")["Body"].read() == b"first"


def test_restart_keeps_data_and_endpoint() -> None:
    with MinioServer() as server:
        endpoint = server.endpoint
        bucket = server.make_bucket("loupe-durable")
        server.client().put_object(Bucket=bucket, Key="k", Body=b"kept")

        server.stop()
        assert not server.is_running
        with pytest.raises(EndpointConnectionError):
            server.client(connect_timeout=1, max_attempts=1).head_bucket(Bucket=bucket)

        server.start()
        assert server.endpoint == endpoint
        assert server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"

        server.restart()
        assert server.endpoint == endpoint
        assert server.client().get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"
    assert not server.is_running


def test_pause_makes_s3_unresponsive_until_resume(minio: MinioServer) -> None:
    bucket = minio.make_bucket("loupe-pause")
    minio.pause()
    try:
        assert minio.is_paused
        with pytest.raises((ReadTimeoutError, ConnectTimeoutError)):
            minio.client(connect_timeout=1, read_timeout=1, max_attempts=1).head_bucket(Bucket=bucket)
    finally:
        minio.resume()
    minio.client().head_bucket(Bucket=bucket)


def test_stop_frees_the_port() -> None:
    server = MinioServer().start()
    port = server.port
    server.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
