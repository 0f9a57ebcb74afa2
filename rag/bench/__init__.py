"""Benchmarks: ingest throughput, query latency and startup time (`python -m rag.bench`)."""
