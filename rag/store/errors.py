"""The store's errors: each one a Milvus problem the user can act on, its message says how."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A Milvus problem the user can act on; the message says what to do."""


class StoreLockedError(StoreError):
    """The Milvus Lite db is open in another process (one process per db)."""


class ProfileMismatchError(StoreError):
    """The collection was built by another embedder profile or schema version."""
