"""Retrieval evaluation on BEIR-format sets: ``python -m rag.eval DATASET_DIR --split SPLIT``.

``beir`` reads a dataset, ``metrics`` scores ranked documents (ir-measures), ``runner``
ingests a corpus through the product's pipeline and runs the queries per mode.
"""

from rag.eval.beir import BeirDataset, DatasetError, Qrels
from rag.eval.metrics import METRIC_NAMES, collapse_to_documents, mean_scores, per_query
from rag.eval.runner import EvalMode, ingest_documents, run_mode

__all__ = [
    "METRIC_NAMES",
    "BeirDataset",
    "DatasetError",
    "EvalMode",
    "Qrels",
    "collapse_to_documents",
    "ingest_documents",
    "mean_scores",
    "per_query",
    "run_mode",
]
