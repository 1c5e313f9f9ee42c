"""Object storage and the bytes Loupe writes there: the store interface (folder or S3), Parquet manifests
and their parts, and the leases that keep runs and garbage collection apart."""
