"""Decisions over processed samples: quality gates, stratum outliers, duplicate grouping and its
verification, splits, taxonomy mapping, privacy and the review queue."""
