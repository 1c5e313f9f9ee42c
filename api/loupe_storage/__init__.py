"""The storage layout shared by the operator and the workers: the object-store client (folder or S3)
and the version-record reader/writer. A leaf: it imports only loupe_api, the standard library and boto3."""
