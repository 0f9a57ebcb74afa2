"""The store: chunks and their vectors in a Milvus collection, with the records kept beside it.

One module per job:

- ``lite``: the embedded Milvus Lite engine (which one, its db's lock, serving a db).
- ``connection``: connect to a Lite db path or a server URL.
- ``schema``: field names, byte limits, BM25 analyzers, indexes; creating the tables.
- ``profile``: the profile record (what built a collection) and its checks.
- ``records``: meta records (``__meta``) and fitted parameter blobs (``__sparse_params``).
- ``fitted``: a fitted sparse function's parameters (BM25) and fit state: save, load.
- ``manifest``: the file manifest (``__files``): which file versions are stored.
- ``journal``: the switch journal (``__journal``): file switches not finished.
- ``chunks``: a chunk and its vectors as a row of the collection, and back.
- ``collection``: ``MilvusStore``, which opens them together; chunk writes, reads, search.

The names imported here are the store's public interface.
"""

from __future__ import annotations

from rag.store.chunks import sparse_to_milvus
from rag.store.collection import MilvusStore
from rag.store.connection import connect, disconnect
from rag.store.errors import ProfileMismatchError, StoreError, StoreLockedError
from rag.store.fitted import SparseParamsError, load_params
from rag.store.journal import JOURNAL_SUFFIX, FileSwitch
from rag.store.manifest import FILES_SUFFIX, FileRecord
from rag.store.profile import PROFILE_KEY, CollectionProfile
from rag.store.records import META_SUFFIX, PARAMS_SUFFIX, read_records
from rag.store.schema import (
    BM25_FIELD,
    CHUNK_FIELDS,
    CHUNK_FILTER,
    DENSE_FIELD,
    DENSE_INDEXES,
    LEXICAL_ANALYZERS,
    LEXICAL_FIELD,
    MAX_SOURCE_BYTES,
    SCHEMA_VERSION,
    SECTION_FILTER,
    SPARSE_FIELD,
    fit_bytes,
)

__all__ = [
    "BM25_FIELD",
    "CHUNK_FIELDS",
    "CHUNK_FILTER",
    "DENSE_FIELD",
    "DENSE_INDEXES",
    "FILES_SUFFIX",
    "JOURNAL_SUFFIX",
    "LEXICAL_ANALYZERS",
    "LEXICAL_FIELD",
    "MAX_SOURCE_BYTES",
    "META_SUFFIX",
    "PARAMS_SUFFIX",
    "PROFILE_KEY",
    "SCHEMA_VERSION",
    "SECTION_FILTER",
    "SPARSE_FIELD",
    "CollectionProfile",
    "FileRecord",
    "FileSwitch",
    "MilvusStore",
    "ProfileMismatchError",
    "SparseParamsError",
    "StoreError",
    "StoreLockedError",
    "connect",
    "disconnect",
    "fit_bytes",
    "load_params",
    "read_records",
    "sparse_to_milvus",
]
