"""Versions as records: reading and committing version records, the semantic-version decision, tags,
retention and garbage collection, diffs between versions and lineage across runs."""
