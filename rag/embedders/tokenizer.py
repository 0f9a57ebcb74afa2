"""Token offsets from a Hugging Face tokenizer, for token-aware chunking."""

from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rag.embedders.packaged import resolve_model


class HFTokenCounter:
    """Wraps a fast Hugging Face tokenizer to report token character spans.

    Args:
        tokenizer: a *fast* tokenizer (it must support ``return_offsets_mapping``).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not tokenizer.is_fast:
            raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer")
        self._tokenizer = tokenizer

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character ``(start, end)`` offsets of every token of ``text`` (no special tokens).

        Spans are made non-overlapping: some tokenizers (XLM-R under transformers 5) give a
        lone ``▁`` token the span of the character after it; its end is clipped to where the
        next token starts, so slicing by spans never repeats or splits a character.
        """
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        spans = [(int(start), int(end)) for start, end in encoded["offset_mapping"]]
        return [
            (start, max(start, min(end, spans[i + 1][0])) if i + 1 < len(spans) else end)
            for i, (start, end) in enumerate(spans)
        ]


# Chunks are measured with this tokenizer when no function of the profile has one of its
# own (an API dense function with BM25): BERT WordPiece, shipped with the packaged MiniLM.
FALLBACK_TOKENIZER_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def fallback_token_counter() -> HFTokenCounter:
    """Token spans of the packaged all-MiniLM-L6-v2 tokenizer (BERT WordPiece, uncased).

    Raises:
        OSError: the packaged model is not installed and the hub cannot be reached.
    """
    return HFTokenCounter(AutoTokenizer.from_pretrained(resolve_model(FALLBACK_TOKENIZER_MODEL)))
