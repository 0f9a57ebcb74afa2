"""Text kept beside a chunk collection: its meta records (key → JSON) and fitted parameter blobs.

``<collection>__meta`` holds the records (``rag.profile``, a fitted function's state), a side
table rather than collection properties: Milvus Lite 2.5 drops the properties given at
creation and does not implement ``alter_collection_properties``.
``<collection>__sparse_params`` holds fitted sparse parameters (e.g. BM25's JSON) under
their fingerprint, cut into parts that fit a VARCHAR.
"""

from __future__ import annotations

from pymilvus import CollectionSchema, DataType, MilvusClient

from rag.store.schema import PLACEHOLDER_VEC, STRONG, create_table, load_table, quote

META_SUFFIX = "__meta"  # the sibling collection of records about the collection (key → JSON)
PARAMS_SUFFIX = "__sparse_params"  # the sibling collection of fitted sparse parameters
_PARAMS_PART_CHARS = 60_000  # params JSON is ASCII: characters = bytes < VARCHAR's 65535
_PARAMS_ROWS = 32  # parameter parts per upsert request


# ----------------------------------------------------------------- meta records
def create_meta(client: MilvusClient, collection: str) -> None:
    """Create ``<collection>__meta``, the table of ``collection``'s records."""
    meta = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    meta.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    meta.add_field("value", DataType.VARCHAR, max_length=65_535)
    create_table(client, f"{collection}{META_SUFFIX}", meta)


def read_records(client: MilvusClient, collection: str) -> dict[str, str]:
    """The records kept about ``collection`` (``rag.profile``, a fitted function's state):
    the rows of ``<collection>__meta``; ``{}`` when that table does not exist. The table
    must be loaded."""
    meta = f"{collection}{META_SUFFIX}"
    if not client.has_collection(meta):
        return {}
    rows = client.query(meta, filter='key != ""', output_fields=["key", "value"], **STRONG)
    return {row["key"]: row["value"] for row in rows}


def write_records(client: MilvusClient, collection: str, records: dict[str, str]) -> None:
    """Set records about ``collection`` (in one upsert request).

    Raises:
        ValueError: a key over 64 bytes or a value over 65,535 bytes of UTF-8.
    """
    meta = f"{collection}{META_SUFFIX}"
    for key, value in records.items():
        if len(key.encode()) > 64 or len(value.encode()) > 65_535:
            raise ValueError(f"record {key!r} is too long for {meta}")
    rows = [{"key": k, "value": v, "vec": PLACEHOLDER_VEC} for k, v in records.items()]
    client.upsert(meta, rows)


# ----------------------------------------------------------------- fitted parameter blobs
def _params_columns() -> CollectionSchema:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("part", DataType.VARCHAR, max_length=_PARAMS_PART_CHARS)
    return schema


def write_params(client: MilvusClient, collection: str, fingerprint: str, text: str) -> None:
    """Store fitted sparse parameters (ASCII text, e.g. BM25's JSON) under their
    fingerprint in ``<collection>__sparse_params`` (created on first use).

    Raises:
        ValueError: ``text`` is not ASCII.
    """
    if not text.isascii():
        raise ValueError("sparse parameters must be ASCII text")
    table = f"{collection}{PARAMS_SUFFIX}"
    load_table(client, table, _params_columns)
    parts = [text[i : i + _PARAMS_PART_CHARS] for i in range(0, len(text), _PARAMS_PART_CHARS)]
    rows = [
        {"id": f"{fingerprint}:{i:06d}", "part": part, "vec": PLACEHOLDER_VEC}
        for i, part in enumerate(parts or [""])
    ]
    for start in range(0, len(rows), _PARAMS_ROWS):
        client.upsert(table, rows[start : start + _PARAMS_ROWS])


def read_params(client: MilvusClient, collection: str, fingerprint: str) -> str | None:
    """The parameters stored under ``fingerprint`` (``None`` when there are none)."""
    table = f"{collection}{PARAMS_SUFFIX}"
    if not load_table(client, table):
        return None
    rows = client.query(
        table,
        filter=f"id like {quote(fingerprint + ':%')}",
        output_fields=["id", "part"],
        **STRONG,
    )
    if not rows:
        return None
    return "".join(row["part"] for row in sorted(rows, key=lambda row: row["id"]))


def drop_params(client: MilvusClient, collection: str, keep: str) -> None:
    """Delete every stored parameter set except the one of fingerprint ``keep``."""
    table = f"{collection}{PARAMS_SUFFIX}"
    if load_table(client, table):
        rows = client.query(table, filter='id != ""', output_fields=["id"], **STRONG)
        # By id: Milvus Lite 2.5 fails on a `not (id like …)` delete expression.
        stale = [row["id"] for row in rows if not row["id"].startswith(f"{keep}:")]
        if stale:
            client.delete(table, ids=stale)
