"""When an ingest fits or refits the sparse parameters (BM25): first fit, drift, --refit-bm25.

The parameters and the fit state are kept beside the collection (``rag.store.fitted``).
The policy (applied by :func:`after_ingest`, which every ingest calls after its run):

1. The first ingest writes its chunks with empty sparse rows, fits on every stored chunk,
   then rewrites the sparse vector of every chunk.
2. Later ingests encode new chunks with the recorded parameters (terms unseen at fit time get
   no weight) and add the chunks they wrote or deleted to ``changed_chunks``.
3. When ``changed_chunks`` exceeds ``drift`` (``RAG_BM25_REFIT_DRIFT``, default 0.2) times
   the chunks the parameters were fitted on, on ``--refit-bm25``, when the BM25 settings
   (k1, b, epsilon) differ from the fitted ones, or when the stored parameters are missing,
   the ingest refits on every stored chunk and rewrites every sparse vector.
4. A refit stores the new parameters, then marks the collection as refitting before it
   rewrites anything; queries are refused while the mark is set, and an interrupted refit
   is redone by the next ingest. The new profile and the cleared mark are written together.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace

from rag.chunking import embedding_text
from rag.embedders.base import Embedder, FittedSparseEncoder, fitted_sparse
from rag.store import PROFILE_KEY, CollectionProfile, MilvusStore
from rag.store.fitted import FitState, load_recorded, params_text, read_state, state_record

REFIT_BATCH = 1000  # chunks encoded and rewritten per step of a refit


@dataclass(frozen=True)
class RefitReport:
    """One refit: why, on how many chunks, the new parameters, and how long it took."""

    reason: str
    chunks: int
    fingerprint: str
    vocab_size: int
    seconds: float

    def describe(self) -> str:
        """One line for the ingest output."""
        return (
            f"BM25 refitted ({self.reason}): {self.chunks} chunks, {self.vocab_size} terms, "
            f"params {self.fingerprint}; every sparse vector rewritten in {self.seconds:.1f} s"
        )


def prepare_ingest(store: MilvusStore, embedder: Embedder, *, refit: bool = False) -> None:
    """Ingest side, before the run: load the recorded parameters so that new chunks are
    encoded with them; defer instead (new chunks get empty sparse rows, the refit after the
    run fills them) when there are none, a refit is pending or asked for, or they cannot be
    loaded."""
    sparse = fitted_sparse(embedder)
    if sparse is None:
        return
    state = read_state(store)
    assert store.profile is not None
    if refit or state.refitting or not store.profile.sparse_params:
        sparse.defer()
    elif load_recorded(store, sparse) is not None:
        sparse.defer()
    else:
        store.check_profile(CollectionProfile.of(embedder))


def refit_reason(
    store: MilvusStore, sparse: FittedSparseEncoder, *, refit: bool, drift: float
) -> str | None:
    """Why the parameters must be refitted now (``None``: they need not be); see the
    module's policy."""
    state = read_state(store)
    if refit:
        return "asked with --refit-bm25"
    if state.refitting:
        return "finishing an interrupted refit"
    if not sparse.fingerprint:
        assert store.profile is not None
        return "stored parameters unusable" if store.profile.sparse_params else "first fit"
    stale = sparse.stale()
    if stale:
        return stale
    changed = state.changed_chunks + store.chunks_changed
    if changed > drift * state.fitted_chunks:
        return (
            f"{changed} chunks written or deleted since the fit on {state.fitted_chunks} "
            f"chunks, over {drift:.0%}"
        )
    return None


def refit(store: MilvusStore, embedder: Embedder, reason: str) -> RefitReport | None:
    """Fit the embedder's sparse function on every stored chunk (the text each was embedded
    from; section rows repeat chunk text and are left out of the fit), store the parameters,
    and rewrite every row's sparse vector with them; see the
    module's policy for the order of the writes. ``None`` when the collection is empty.

    Raises:
        ValueError: the embedder has no fitted sparse function.
    """
    sparse = fitted_sparse(embedder)
    if sparse is None:
        raise ValueError(f"profile {embedder.profile!r} has no fitted sparse function")
    started = time.perf_counter()
    chunks = store.all_rows()  # with the section rows, whose vectors follow the fit too
    texts = [embedding_text(chunk) for chunk in chunks]
    fitted = [text for text, chunk in zip(texts, chunks, strict=True) if not chunk.is_section]
    if not fitted:
        store.write_records(state_record(FitState()))
        return None
    sparse.fit(fitted)
    fingerprint = sparse.fingerprint
    store.write_params(fingerprint, params_text(sparse))
    store.write_records(state_record(replace(read_state(store), refitting=fingerprint)))
    for start in range(0, len(chunks), REFIT_BATCH):
        ids = [chunk.chunk_id for chunk in chunks[start : start + REFIT_BATCH]]
        store.update_sparse(ids, sparse.encode_documents(texts[start : start + REFIT_BATCH]))
    store.flush()  # every row was rewritten: unflushed, Milvus Lite re-indexes them per search
    # The recorded schema version stays: it says which fields the collection has.
    profile = CollectionProfile.of(embedder)
    if store.profile is not None:
        profile = replace(profile, schema_version=store.profile.schema_version)
    store.write_records(
        {PROFILE_KEY: json.dumps(asdict(profile))}
        | state_record(FitState(fitted_chunks=len(fitted)))
    )
    store.profile = profile
    store.drop_params(keep=fingerprint)
    store.chunks_changed = 0
    return RefitReport(
        reason, len(fitted), fingerprint, sparse.vocab_size, time.perf_counter() - started
    )


def after_ingest(
    store: MilvusStore, embedder: Embedder, *, refit_now: bool = False, drift: float = 0.2
) -> RefitReport | None:
    """Ingest side, after the run: refit when the policy says so, else record the run's
    written and deleted chunks. ``None`` when nothing was refitted.

    Args:
        refit_now: refit whatever the policy says (``--refit-bm25``).
        drift: the changed fraction of the fitted chunks that triggers a refit.
    """
    sparse = fitted_sparse(embedder)
    if sparse is None:
        return None
    reason = refit_reason(store, sparse, refit=refit_now, drift=drift)
    if reason is not None:
        return refit(store, embedder, reason)
    state = read_state(store)
    changed = state.changed_chunks + store.chunks_changed
    store.write_records(state_record(replace(state, changed_chunks=changed)))
    store.chunks_changed = 0
    return None
