"""Loupe Kubernetes operator."""
