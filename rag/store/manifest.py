"""The file manifest (``<collection>__files``): which version of each file is completely stored."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pymilvus import DataType, MilvusClient

from rag.store.schema import MAX_SOURCE_BYTES, PLACEHOLDER_VEC, STRONG, create_table

FILES_SUFFIX = "__files"  # the sibling collection of the file manifest


@dataclass(frozen=True)
class FileRecord:
    """A manifest row: the version of a file whose chunks are completely stored.

    Attributes:
        source: the file path (the chunks' ``source``).
        file_hash: sha256 hex of the file's bytes.
        chunking: the chunker settings that cut it (``Chunker.signature``); a file cut
            with other settings is chunked again.
        size: bytes.
        mtime_ns: modification time, nanoseconds since the epoch.
        n_chunks: chunks stored for this version.
        ingested_at: unix seconds when the version was committed.
    """

    source: str
    file_hash: str
    chunking: str
    size: int
    mtime_ns: int
    n_chunks: int
    ingested_at: int


def create_manifest(client: MilvusClient, collection: str) -> None:
    """Create ``<collection>__files``, one row per :class:`FileRecord`, keyed by source."""
    files = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    files.add_field("source", DataType.VARCHAR, is_primary=True, max_length=MAX_SOURCE_BYTES)
    files.add_field("file_hash", DataType.VARCHAR, max_length=64)
    files.add_field("chunking", DataType.VARCHAR, max_length=64)
    files.add_field("size", DataType.INT64)
    files.add_field("mtime_ns", DataType.INT64)
    files.add_field("n_chunks", DataType.INT32)
    files.add_field("ingested_at", DataType.INT64)
    create_table(client, f"{collection}{FILES_SUFFIX}", files)


def read_manifest(client: MilvusClient, collection: str) -> dict[str, FileRecord]:
    """The manifest by source: every file whose current version is completely stored. The
    table must be loaded."""
    iterator = client.query_iterator(
        f"{collection}{FILES_SUFFIX}",
        batch_size=1000,
        filter="",
        output_fields=list(FileRecord.__dataclass_fields__),
        **STRONG,
    )
    records: dict[str, FileRecord] = {}
    while batch := iterator.next():
        for row in batch:
            record = FileRecord(**{k: row[k] for k in FileRecord.__dataclass_fields__})
            records[record.source] = record
    iterator.close()
    return records


def commit_record(client: MilvusClient, collection: str, record: FileRecord) -> None:
    """Record ``record`` as the file's completely stored version."""
    row = asdict(record) | {"vec": PLACEHOLDER_VEC}
    client.upsert(f"{collection}{FILES_SUFFIX}", [row])


def delete_record(client: MilvusClient, collection: str, source: str) -> None:
    """Delete the manifest row of ``source``."""
    client.delete(f"{collection}{FILES_SUFFIX}", ids=[source])
