"""Using a version: the Python client, exports, SQL queries and search."""
