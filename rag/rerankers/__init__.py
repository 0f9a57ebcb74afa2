"""Rerankers: reorder retrieved hits by a finer (query, passage) score, chosen by name.

``build_reranker(settings, embedder)`` returns the reranker of ``settings.reranker``
(``None`` for ``none``; ``auto``, the default, picks by the embedder);
``reranker.rerank(query, hits, top_k)`` returns the ``top_k`` best hits, each with its
``rerank_score`` and new ``rank``, keeping its ``fused_rank``, ``dense_rank`` and
``sparse_rank``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.embedders.base import Embedder
from rag.rerankers.base import Reranker, RerankError, apply_scores, passage_text
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.rerankers.maxsim import TokenEncoder

RERANKERS: dict[str, str] = {
    "none": "no reranking: hits stay in retrieved (fused) order",
    "cross-encoder": "sentence-transformers CrossEncoder (default "
    "cross-encoder/ms-marco-MiniLM-L-6-v2; any hub id or local path)",
    "bge-reranker": "BGE reranker through FlagEmbedding's FlagReranker (default "
    "BAAI/bge-reranker-v2-m3)",
    "jina": "Jina Reranker API (default jina-reranker-v1-base-en; needs RAG_JINA_API_KEY)",
    "bge-m3-colbert": "BGE-M3 multi-vector (ColBERT MaxSim) score (default RAG_BGE_M3_MODEL; "
    "shares the bge-m3 profile's loaded model)",
    "maxsim": "late interaction (MaxSim) over the dense model's own token vectors, mixed with "
    "the retrieval score (shares the loaded sentence-transformers or multilingual-e5 dense "
    "model; without one, RAG_DENSE_MODEL)",
    "auto": "the default: maxsim when the profile's dense model lends its token vectors "
    "(a sentence-transformers model, e.g. all-MiniLM-L6-v2, or multilingual-e5), else none",
}

# The share of the reranker's score in the final order (``rag.search.mix_scores``) when
# RAG_RERANK_WEIGHT is unset: a trained reranker alone (1.0); the zero-shot MaxSim score
# mixed half and half with the retrieval score (docs/EVALUATION.md, "MaxSim reranking").
RERANK_WEIGHTS: dict[str, float] = {"maxsim": 0.5}


class UnknownRerankerError(ValueError):
    """The settings name a reranker that does not exist."""


def rerank_weight_of(reranker: Reranker | None, weight: float | None = None) -> float:
    """The share of ``reranker``'s score in the final order: ``weight`` when given
    (``RAG_RERANK_WEIGHT``), else the reranker's own (:data:`RERANK_WEIGHTS`, 1.0 when not
    listed or without a reranker)."""
    if weight is not None:
        return weight
    return RERANK_WEIGHTS.get(reranker.name, 1.0) if reranker is not None else 1.0


def build_reranker(settings: Settings, embedder: Embedder | None = None) -> Reranker | None:
    """The reranker of ``settings.reranker`` with its model loaded, or ``None`` for ``none``.

    ``auto`` is ``maxsim`` when ``embedder``'s dense encoder lends its token vectors (a
    plain sentence-transformers model, as in the default profile, or multilingual-e5, as in
    the multilingual profile), else ``none``: the bge-m3 and API profiles, and no
    ``embedder``, get no reranker (docs/EVALUATION.md, "MaxSim reranking").

    ``settings.reranker_model`` overrides the reranker's default model. With
    ``bge-m3-colbert``, a ``bge-m3`` profile ``embedder`` of the same model lends its loaded
    model instead of a second load; with ``maxsim``, the embedder's dense encoder does unless
    ``reranker_model`` names another model, and the reranker then runs on the torch threads
    the process has set (``RAG_QUERY_THREADS`` in a process that searches); without one it
    loads ``RAG_DENSE_MODEL``. A reranker that loads its own model sets ``RAG_NUM_THREADS``.

    Raises:
        UnknownRerankerError: the name is not one of ``RERANKERS``.
        RerankError: ``jina`` without an API key.
        OSError: a model cannot be found locally and the hub cannot be reached.
    """
    name = settings.reranker
    encoder = _token_encoder(embedder) if name in ("auto", "maxsim") else None
    if name == "auto":
        name = "maxsim" if encoder is not None else "none"
    if name == "none":
        return None
    if name not in RERANKERS:
        raise UnknownRerankerError(
            f"unknown reranker {name!r}; choose one of {', '.join(RERANKERS)}"
        )
    if name == "jina":
        from rag.rerankers.jina import DEFAULT_MODEL, JinaReranker

        return JinaReranker(
            settings.jina_api_key,
            settings.reranker_model or DEFAULT_MODEL,
            base_url=settings.jina_base_url,
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
        )
    from rag.embedders import configure_threads

    local = {
        "device": settings.device,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
    }
    if name == "maxsim":
        return _maxsim(settings, encoder)
    configure_threads(settings.num_threads)
    if name == "cross-encoder":
        from rag.rerankers.cross_encoder import DEFAULT_MODEL, CrossEncoderReranker

        return CrossEncoderReranker(
            settings.reranker_model or DEFAULT_MODEL, precision=settings.precision, **local
        )
    if name == "bge-reranker":
        from rag.rerankers.bge import DEFAULT_MODEL, BGEReranker

        return BGEReranker(
            settings.reranker_model or DEFAULT_MODEL, precision=settings.precision, **local
        )
    from rag.embedders.bge_m3 import BGEM3Embedder
    from rag.rerankers.colbert import BGEM3ColbertReranker

    model = settings.reranker_model or settings.bge_m3_model
    if isinstance(embedder, BGEM3Embedder) and embedder.dense_name == model:
        return BGEM3ColbertReranker(embedder.model, batch_size=settings.batch_size)
    return BGEM3ColbertReranker.from_pretrained(model, **local)


def _token_encoder(embedder: Embedder | None) -> TokenEncoder | None:
    """``embedder``'s dense encoder as a MaxSim token encoder: ``MultilingualE5Dense``, or a
    plain ``SentenceTransformerDense`` (behind the int8 query encoder, its torch model for
    documents); else ``None``."""
    from rag.embedders.multilingual_e5 import MultilingualE5Dense
    from rag.embedders.sentence_transformer import SentenceTransformerDense
    from rag.rerankers.maxsim import SentenceTransformerTokens

    dense = getattr(embedder, "dense", None)
    if isinstance(dense, MultilingualE5Dense):
        return dense
    dense = getattr(dense, "documents", dense)
    if type(dense) is SentenceTransformerDense:
        return SentenceTransformerTokens(dense.model, dense.name, dense.autocast)
    return None


def _maxsim(settings: Settings, encoder: TokenEncoder | None) -> Reranker:
    from rag.rerankers.maxsim import MaxSimReranker

    if encoder is not None and settings.reranker_model in (None, encoder.name):
        return MaxSimReranker(encoder)  # on the threads the process has set
    from rag.embedders import configure_threads

    configure_threads(settings.num_threads)
    return MaxSimReranker.from_pretrained(
        settings.reranker_model or settings.dense_model,
        device=settings.device,
        max_length=settings.max_length,
        precision=settings.precision,
    )


__all__ = [
    "RERANKERS",
    "RERANK_WEIGHTS",
    "RerankError",
    "Reranker",
    "UnknownRerankerError",
    "apply_scores",
    "build_reranker",
    "passage_text",
    "rerank_weight_of",
]
