"""Helpers shared by Loupe's tests: real servers (MinIO, ...) started and stopped by the tests."""
