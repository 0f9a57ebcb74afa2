"""Retrieval evaluation on BEIR-format sets: ``python -m rag.eval DATASET_DIR --split SPLIT``.

``beir`` reads a dataset, ``metrics`` scores ranked documents (ir-measures), ``runner``
runs the queries per mode (the corpus is ingested by the product's ``Ingestor``).
"""

from rag.eval.beir import BeirDataset, DatasetError, Qrels
from rag.eval.metrics import METRIC_NAMES, collapse_to_documents, mean_scores, per_query
from rag.eval.runner import EvalMode, run_mode

__all__ = [
    "METRIC_NAMES",
    "BeirDataset",
    "DatasetError",
    "EvalMode",
    "Qrels",
    "collapse_to_documents",
    "mean_scores",
    "per_query",
    "run_mode",
]
