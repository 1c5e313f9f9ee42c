"""What comes in: listing sources, sample metadata and label import, spec files, and the demo corpus."""
