"""Hybrid (dense + sparse) retrieval-augmented generation on Milvus.

The pipeline, one module per stage:
load (`rag.loaders`) → chunk (`rag.chunking`) → embed (`rag.embedders`) → store (`rag.store`)
on the way in; query → embed → search and fuse (`rag.retriever`) on the way out.
"""

import os as _os

# gRPC's C core logs keepalive chatter between pymilvus and the in-process Milvus Lite server
# ("GOAWAY ... too_many_pings") at error level; errors reach callers as exceptions anyway.
_os.environ.setdefault("GRPC_VERBOSITY", "NONE")
