"""The few Kubernetes API reads the operator needs beyond what kopf hands to handlers."""

from __future__ import annotations

import base64
from typing import Any

from loupe_api.common import SecretReference, credential_env_names
from loupe_api.constants import GROUP, VERSION


def load_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def get_custom(namespace: str, plural: str, name: str) -> dict[str, Any] | None:
    """A loupe.dev object as a dict, or None when it does not exist."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        found: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, name
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


def secret_value(namespace: str, name: str, key: str) -> str:
    """One key of a Secret (e.g. a webhook's HMAC key). Never logged or written anywhere."""
    return _secret(namespace, SecretReference(name=name))[key]


def s3_credentials(namespace: str, ref: SecretReference | None) -> dict[str, str] | None:
    """Access keys from a Secret, for the operator's own listings. Never logged or written anywhere."""
    if ref is None:
        return None
    data = _secret(namespace, ref)
    return {
        "access_key_id": data[ref.access_key_id_key],
        "secret_access_key": data[ref.secret_access_key_key],
    }


def credential_env(namespace: str, secrets: dict[str, SecretReference]) -> dict[str, str]:
    """Each Secret's keys as the environment variables workers read (``credential_env_names``),
    for jobs whose environment the operator passes itself (local and submit modes)."""
    env: dict[str, str] = {}
    for name, ref in secrets.items():
        creds = s3_credentials(namespace, ref) or {}
        key_id, secret = credential_env_names(name)
        env[key_id], env[secret] = creds["access_key_id"], creds["secret_access_key"]
    return env


def announce_peer(name: str, namespaces: list[str], identity: str, heartbeat: dict[str, Any]) -> int:
    """Write this replica's heartbeat into its kopf peering objects (a KopfPeering per watched namespace,
    or the ClusterKopfPeering), exactly as kopf's own keep-alive does; how many objects were found."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi()
    body = {"status": {identity: heartbeat}}
    found = 0
    targets: list[str | None] = [*namespaces] or [None]
    for namespace in targets:
        try:
            if namespace is None:
                api.patch_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name, body)
            else:
                api.patch_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name, body)
        except ApiException as exc:
            if exc.status != 404:  # missing: kopf itself reports it and keeps the operator paused
                raise
            continue
        found += 1
    return found
