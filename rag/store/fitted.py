"""Fitted sparse parameters (BM25) kept beside their collection: the fit state, save and load.

Where they live: in ``<collection>__sparse_params``, a sibling collection in the same Milvus
(inside the db for Milvus Lite, on the server for a server URL), as the text the function's
own ``save`` writes (read back with its ``load``). The collection's profile record holds
their fingerprint and vocabulary size, and its ``rag.sparse_fit`` record the fit state (both
in ``<collection>__meta``). Every process that opens the collection (ingest, search, the app,
eval; on this machine or another) therefore encodes queries with the parameters the stored
documents were encoded with, and a query side holding other parameters is refused. When an
ingest fits or refits them is ``ingest.fitting``'s policy.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rag.embedders.base import Embedder, FittedSparseEncoder, fitted_sparse
from rag.store.collection import MilvusStore
from rag.store.errors import StoreError
from rag.store.profile import PROFILE_KEY, CollectionProfile

FIT_STATE_KEY = "rag.sparse_fit"


class SparseParamsError(StoreError):
    """The collection's fitted sparse parameters cannot be used (none yet, a refit not
    finished, missing or damaged); the message says what to run."""


@dataclass(frozen=True)
class FitState:
    """What the collection records about its fit.

    Attributes:
        fitted_chunks: chunks the current parameters were fitted on.
        changed_chunks: chunks written or deleted since that fit.
        refitting: fingerprint of a refit that has started and not finished (``""``: none).
    """

    fitted_chunks: int = 0
    changed_chunks: int = 0
    refitting: str = ""


def read_state(store: MilvusStore) -> FitState:
    """The collection's fit state (the default when none is recorded)."""
    raw = store.read_record(FIT_STATE_KEY)
    return FitState(**json.loads(raw)) if raw else FitState()


def state_record(state: FitState) -> dict[str, str]:
    """``state`` as the record :meth:`MilvusStore.write_records` writes (``FIT_STATE_KEY``)."""
    return {FIT_STATE_KEY: json.dumps(asdict(state))}


def params_text(sparse: FittedSparseEncoder) -> str:
    """The fitted parameters as the text the function's ``save`` writes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.json"
        sparse.save(str(path))
        return path.read_text(encoding="ascii")


def load_params_text(sparse: FittedSparseEncoder, text: str) -> None:
    """Load parameters from text written by :func:`params_text` (through ``load``)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "params.json"
        path.write_text(text, encoding="ascii")
        sparse.load(str(path))


def load_recorded(store: MilvusStore, sparse: FittedSparseEncoder) -> str | None:
    """Give ``sparse`` the parameters the collection's profile records (read only when its
    own fingerprint differs); the reason when they cannot be loaded, else ``None``."""
    assert store.profile is not None
    fingerprint = store.profile.sparse_params
    if sparse.fingerprint == fingerprint:
        return None
    text = store.read_params(fingerprint)
    if text is None:
        return f"its parameters {fingerprint} are missing from {store.params_collection}"
    load_params_text(sparse, text)
    if sparse.fingerprint != fingerprint:
        return f"its stored parameters do not match their fingerprint {fingerprint}"
    return None


def load_params(store: MilvusStore, embedder: Embedder) -> None:
    """Query side: give the embedder's fitted sparse function the collection's current
    parameters (reloaded only when the recorded fingerprint changed). Does nothing for an
    embedder without a fitted function.

    Raises:
        SparseParamsError: no parameters yet, a refit in progress or interrupted, or the
            stored parameters are missing or damaged.
        ProfileMismatchError: the embedder's composition differs from the collection's.
    """
    sparse = fitted_sparse(embedder)
    if sparse is None:
        return
    records = store.records()
    store.profile = CollectionProfile(**json.loads(records[PROFILE_KEY]))
    raw_state = records.get(FIT_STATE_KEY)
    state = FitState(**json.loads(raw_state)) if raw_state else FitState()
    where = f"collection {store.collection!r} at {store.uri}"
    if state.refitting:
        raise SparseParamsError(
            f"{where}: a {sparse.name} refit is running or was interrupted, so its sparse "
            "vectors are being rewritten; search again when it is done, or finish it with "
            "`python -m ingest PATH`"
        )
    if not store.profile.sparse_params:
        raise SparseParamsError(
            f"{where} has no fitted {sparse.name} parameters yet: ingest documents first "
            "(`python -m ingest PATH`)"
        )
    problem = load_recorded(store, sparse)
    if problem:
        raise SparseParamsError(
            f"{where}: {problem}; refit with `python -m ingest PATH --refit-bm25`"
        )
    store.check_profile(CollectionProfile.of(embedder))
