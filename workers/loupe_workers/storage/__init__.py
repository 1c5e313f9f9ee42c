"""The bytes Loupe writes to object storage (through ``loupe_storage.store``): Parquet manifests and
their parts, and the leases that keep runs and garbage collection apart."""
