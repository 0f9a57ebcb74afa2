"""Hybrid (dense + sparse) retrieval-augmented generation on Milvus.

The pipeline, one module per stage:
load (`rag.loaders`) → chunk (`rag.chunking`) → embed (`rag.embedders`) → store (`rag.store`)
on the way in; query → embed → search and fuse (`rag.retriever`) on the way out.
"""
