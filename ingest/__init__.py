"""Ingestion: a folder of documents → chunks with dense and sparse vectors in Milvus."""
