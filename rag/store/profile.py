"""The profile record: what built a collection (models, dimensions, schema, fitted parameters)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from rag.embedders.base import Embedder, fitted_sparse
from rag.store.errors import ProfileMismatchError
from rag.store.schema import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION

PROFILE_KEY = "rag.profile"  # the meta record of the collection's CollectionProfile
_WAY_OUT = (
    "ingest into another --collection, or rebuild this one with `python -m ingest PATH --reset`."
)
_READABLE = ", ".join(f"v{v}" for v in READABLE_SCHEMA_VERSIONS[:-1]) + (
    f" and v{READABLE_SCHEMA_VERSIONS[-1]}"
)  # "v2, v3 and v4"


@dataclass(frozen=True)
class CollectionProfile:
    """What built a collection, recorded beside it so vectors are never mixed.

    Attributes:
        profile: embedder profile name (a named profile, a hybrid function, or
            ``DENSE+SPARSE``; see ``rag.embedders.registry``).
        dense_model, sparse_model: model ids or paths of the dense and sparse functions
            (``provider:model`` for an API function, ``bm25`` for BM25).
        dim: dense vector dimension.
        vocab_size: sparse vector dimension (vocabulary size; for a fitted function the
            fitted vocabulary's, 0 before the first fit).
        schema_version: version of the store's schema that made the collection
            (``rag.store.schema``; ``READABLE_SCHEMA_VERSIONS`` are opened).
        sparse_params: fingerprint of the fitted sparse parameters (BM25) the sparse vectors
            were computed with; ``""`` for functions without any, and before the first fit.
    """

    profile: str
    dense_model: str
    sparse_model: str
    dim: int
    vocab_size: int
    schema_version: int = SCHEMA_VERSION
    sparse_params: str = ""

    @classmethod
    def of(cls, embedder: Embedder) -> CollectionProfile:
        """The profile record of ``embedder``."""
        fitted = fitted_sparse(embedder)
        return cls(
            embedder.profile,
            embedder.dense_name,
            embedder.sparse_name,
            embedder.dim,
            embedder.vocab_size,
            sparse_params=fitted.fingerprint if fitted is not None else "",
        )

    @property
    def fitted(self) -> bool:
        """Whether the sparse function is fitted on the corpus (its parameters recorded, or
        not fitted yet: vocabulary 0)."""
        return bool(self.sparse_params) or self.vocab_size == 0

    def composition(self) -> CollectionProfile:
        """The record without its fitted state: what must match for vectors to be
        comparable before fitted parameters are loaded."""
        return replace(self, vocab_size=0, sparse_params="") if self.fitted else self

    def describe(self) -> str:
        """One human line: ``profile (dense ×dim, sparse ×vocab, schema vN)``."""
        params = f", params {self.sparse_params}" if self.sparse_params else ""
        return (
            f"{self.profile} (dense {self.dense_model} ×{self.dim}, sparse {self.sparse_model} "
            f"×{self.vocab_size}{params}, schema v{self.schema_version})"
        )


def recorded_profile(raw: str | None, collection: str, uri: str) -> CollectionProfile:
    """The profile of ``collection`` at ``uri`` from its ``PROFILE_KEY`` record ``raw``.

    Raises:
        ProfileMismatchError: no record, a record of another schema version, or one this
            version cannot read (the way out: another --collection, or --reset).
    """
    if raw is None:
        raise ProfileMismatchError(
            f"collection {collection!r} was not created by this tool (no "
            f"{PROFILE_KEY} record): use another --collection, or --reset it"
        )
    try:
        record = json.loads(raw)
        version = record["schema_version"]
        if version in READABLE_SCHEMA_VERSIONS:
            return CollectionProfile(**record)
    except (ValueError, TypeError, KeyError):
        raise ProfileMismatchError(
            f"collection {collection!r} at {uri} has a {PROFILE_KEY} record "
            f"this version cannot read: {_WAY_OUT}"
        ) from None
    raise ProfileMismatchError(
        f"collection {collection!r} at {uri} was built with schema v{version} of "
        f"this tool, which reads schema {_READABLE}: {_WAY_OUT}"
    )


def check_profile(
    recorded: CollectionProfile, wanted: CollectionProfile, collection: str, uri: str
) -> None:
    """Refuse an embedder (profile ``wanted``) whose vectors cannot be mixed with those of
    ``collection`` at ``uri`` (profile ``recorded``).

    A fitted sparse function that has no parameters loaded yet (``wanted.sparse_params``
    empty) is checked on its composition only: it will load the recorded parameters. The
    schema versions are not compared: every readable version holds the same vectors.

    Raises:
        ProfileMismatchError: another composition, model, dimension or schema (the way
            out: the matching profile, another --collection, or --reset), or other fitted
            sparse parameters.
    """
    recorded = replace(recorded, schema_version=wanted.schema_version)
    if recorded.composition() != wanted.composition():
        raise ProfileMismatchError(
            f"collection {collection!r} at {uri} was built with "
            f"{recorded.describe()}, but the current settings use {wanted.describe()}. "
            "Vectors of different models cannot be mixed: use the matching profile "
            "(--profile, or --dense and --sparse; RAG_PROFILE, RAG_DENSE, RAG_SPARSE and the "
            "model settings), ingest into another --collection, or rebuild this one with "
            "`python -m ingest PATH --reset`."
        )
    if wanted.sparse_params and recorded != wanted:
        raise ProfileMismatchError(
            f"collection {collection!r} at {uri} holds sparse vectors of "
            f"{recorded.sparse_model} parameters {recorded.sparse_params or '(none)'}"
            f", but the query side has parameters {wanted.sparse_params}: load the "
            "collection's parameters (rag.store.load_params), or refit with "
            "`python -m ingest PATH --refit-bm25`."
        )
