"""Loupe data plane."""
