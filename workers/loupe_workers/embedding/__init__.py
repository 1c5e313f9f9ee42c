"""Embeddings: the embedding stage, image and text models, and approximate nearest neighbours."""
