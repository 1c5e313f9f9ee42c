"""One object at a time: guarded decoding, per-object processing on workers, and pure quality metrics
and perceptual hashes over decoded pixels."""
