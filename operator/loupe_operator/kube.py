"""The few Kubernetes API reads the operator needs beyond what kopf hands to handlers."""

from __future__ import annotations

import base64
from typing import Any

from loupe_api.common import SecretReference
from loupe_api.constants import GROUP, VERSION


def load_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def get_ingest_source(namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        found: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, namespace, "ingestsources", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def _secret(namespace: str, ref: SecretReference) -> dict[str, str]:
    from kubernetes import client

    secret = client.CoreV1Api().read_namespaced_secret(ref.name, namespace)
    data = secret.data or {}
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def s3_credentials(namespace: str, ref: SecretReference | None) -> dict[str, str] | None:
    """Access keys from a Secret, for the operator's own listings. Never logged or written anywhere."""
    if ref is None:
        return None
    data = _secret(namespace, ref)
    return {
        "access_key_id": data[ref.access_key_id_key],
        "secret_access_key": data[ref.secret_access_key_key],
    }


def credential_env(namespace: str, ref: SecretReference) -> dict[str, str]:
    """The same keys as AWS_* environment variables for a local-mode job process."""
    creds = s3_credentials(namespace, ref) or {}
    return {"AWS_ACCESS_KEY_ID": creds["access_key_id"], "AWS_SECRET_ACCESS_KEY": creds["secret_access_key"]}
