"""Token offsets from a Hugging Face tokenizer, for token-aware chunking."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


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
        """Character ``(start, end)`` offsets of the tokens of ``text`` (no special tokens)."""
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [tuple(span) for span in encoded["offset_mapping"] if span[1] > span[0]]
