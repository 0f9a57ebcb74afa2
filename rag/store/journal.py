"""The switch journal (``<collection>__journal``): file switches begun and not yet finished.

An ingest journals each file's switch to a new version (the chunk ids it adds and the stale
ids it deletes) before writing any chunk, and ends it after committing the manifest row, so
the next run can finish or undo a switch that a crash interrupted (``ingest.pipeline``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from pymilvus import CollectionSchema, DataType, MilvusClient

from rag.store.manifest import FileRecord
from rag.store.schema import (
    BATCH_ROWS,
    MAX_SOURCE_BYTES,
    PLACEHOLDER_VEC,
    STRONG,
    load_table,
    quote,
)

JOURNAL_SUFFIX = "__journal"  # the sibling collection of unfinished file switches
_JOURNAL_IDS = 1_800  # chunk ids per journal row: 1,800 × (32 hex + 1 space) < VARCHAR's 65535
_JOURNAL_ROWS = 64  # rows per upsert request: a row holds up to ~120 kB of ids


@dataclass(frozen=True)
class FileSwitch:
    """A journaled switch of one file to a new version (``ingest.pipeline`` runs it).

    Attributes:
        record: the manifest row of the new version, written when the switch completes.
        added: ids of the new version's chunks that were not stored when the switch began.
        stale: ids of the stored chunks that the new version does not have.
    """

    record: FileRecord
    added: frozenset[str]
    stale: frozenset[str]


def _columns() -> CollectionSchema:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=MAX_SOURCE_BYTES + 7)
    schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
    schema.add_field("part", DataType.INT32)
    schema.add_field("parts", DataType.INT32)
    schema.add_field("record", DataType.VARCHAR, max_length=65_535)
    schema.add_field("added", DataType.VARCHAR, max_length=65_535)
    schema.add_field("stale", DataType.VARCHAR, max_length=65_535)
    return schema


def _journal_rows(switch: FileSwitch) -> list[dict]:
    """The journal rows of ``switch``: ids space-separated, at most 1,800 of each kind per
    row; row 0 also holds the manifest record as JSON."""
    source = switch.record.source
    added, stale = sorted(switch.added), sorted(switch.stale)
    parts = max(1, -(-max(len(added), len(stale)) // _JOURNAL_IDS))
    return [
        {
            "key": f"{part:06d}:{source}",
            "source": source,
            "part": part,
            "parts": parts,
            "record": json.dumps(asdict(switch.record), ensure_ascii=False) if part == 0 else "",
            "added": " ".join(added[part * _JOURNAL_IDS : (part + 1) * _JOURNAL_IDS]),
            "stale": " ".join(stale[part * _JOURNAL_IDS : (part + 1) * _JOURNAL_IDS]),
            "vec": PLACEHOLDER_VEC,
        }
        for part in range(parts)
    ]


def begin_switches(client: MilvusClient, collection: str, switches: Sequence[FileSwitch]) -> None:
    """Journal ``switches`` in ``<collection>__journal`` (created on first use)."""
    table = f"{collection}{JOURNAL_SUFFIX}"
    rows = [row for switch in switches for row in _journal_rows(switch)]
    load_table(client, table, _columns)
    for start in range(0, len(rows), _JOURNAL_ROWS):
        client.upsert(table, rows[start : start + _JOURNAL_ROWS])


def read_journal(client: MilvusClient, collection: str) -> dict[str, FileSwitch | None]:
    """Every journaled switch, by source; ``None`` for a switch whose journal rows were
    not all written (a run stopped inside :func:`begin_switches`)."""
    table = f"{collection}{JOURNAL_SUFFIX}"
    if not load_table(client, table):
        return {}
    iterator = client.query_iterator(
        table,
        batch_size=64,
        filter="",
        output_fields=["source", "part", "parts", "record", "added", "stale"],
        **STRONG,
    )
    rows: dict[str, dict[int, dict]] = {}
    while batch := iterator.next():
        for row in batch:
            rows.setdefault(row["source"], {})[row["part"]] = row
    iterator.close()
    switches: dict[str, FileSwitch | None] = {}
    for source, parts in rows.items():
        first = parts.get(0)
        if first is None or set(parts) != set(range(first["parts"])):
            switches[source] = None
            continue
        switches[source] = FileSwitch(
            FileRecord(**json.loads(first["record"])),
            frozenset(i for part in parts.values() for i in part["added"].split()),
            frozenset(i for part in parts.values() for i in part["stale"].split()),
        )
    return switches


def end_switches(client: MilvusClient, collection: str, sources: Iterable[str]) -> None:
    """Delete the journal rows of ``sources``."""
    table = f"{collection}{JOURNAL_SUFFIX}"
    quoted = [quote(source) for source in sources]
    if quoted and load_table(client, table):
        for start in range(0, len(quoted), BATCH_ROWS):
            batch = ", ".join(quoted[start : start + BATCH_ROWS])
            client.delete(table, filter=f"source in [{batch}]")
