"""Batch scoring: a whole table scored with a bundle, chunk by chunk (``kubeloop predict``)."""

from kubeloop.batch._score import DEFAULT_CHUNK_ROWS, BatchOptions, BatchResult, score_table

__all__ = ["DEFAULT_CHUNK_ROWS", "BatchOptions", "BatchResult", "score_table"]
