"""Bytes to text for the text formats: encoding detection, binary rejection, mojibake repair."""

from __future__ import annotations

import codecs
from pathlib import Path

import charset_normalizer
import ftfy

from rag.loaders import LoadError

# Checked in order: the UTF-32 little-endian mark starts with the UTF-16 little-endian one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"PK\x05\x06", "ZIP archive"),
    (b"\x7fELF", "ELF executable"),
)

# Only what repairs mojibake and normalises line breaks and controls: ftfy's other fixes
# (HTML unescaping, quote uncurling, full-width folding, ligatures) would change real text.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    explain=False,
)

# Valid UTF-8 multi-byte characters per invalid sequence, at least, to read UTF-8 with a few
# damaged bytes as UTF-8 (the damage replaced by U+FFFD) rather than guess another encoding.
_DAMAGED_UTF8_RATIO = 10

# The code page most legacy Western text was written in; the tie-breaker between guesses.
_PREFERRED_LEGACY = "cp1252"


def decode_text(path: Path, data: bytes) -> str:
    """Decode the bytes of a text-typed file (Markdown, plain text, HTML) to clean text.

    UTF-8 (a BOM is dropped) is tried first, then UTF-16/32 when a BOM says so, then
    UTF-8 with a few damaged bytes (each replaced by U+FFFD), then charset-normalizer's
    best guess. Mojibake is repaired afterwards: ftfy's fixes, and
    UTF-8 that was once decoded as Mac Roman, which ftfy leaves alone.

    Args:
        path: the file the bytes came from, named in errors.
        data: the file's bytes.

    Returns:
        The text, line breaks normalised to ``\\n``.

    Raises:
        LoadError: the content is binary (a known signature or NUL bytes), in no encoding
            that fits, or empty or whitespace only.
    """
    _reject_binary(path, data)
    text = _repair(_decode(path, data))
    if not text.strip():
        raise LoadError(path, "no text found (whitespace only)")
    return text


def _reject_binary(path: Path, data: bytes) -> None:
    """Raise when the bytes start with a binary format's signature."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            raise LoadError(path, f"binary content (looks like {kind}), not text")
    # "MZ" alone could start a sentence: a Windows executable also has NULs in its header.
    if data.startswith(b"MZ") and b"\x00" in data[:64]:
        raise LoadError(path, "binary content (looks like Windows executable), not text")


def _decode(path: Path, data: bytes) -> str:
    """Turn bytes into text: BOM, UTF-8, damaged UTF-8, then the best legacy guess."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError as exc:
                raise LoadError(path, f"invalid {codec} text after its byte-order mark") from exc
    if b"\x00" in data:
        raise LoadError(path, "binary content (contains NUL bytes), not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        damaged = _damaged_utf8(data)
    return damaged if damaged is not None else _guess_legacy(path, data)


def _damaged_utf8(data: bytes) -> str | None:
    """``data`` as UTF-8 with its few invalid bytes replaced by U+FFFD, if it is that.

    It is when its valid multi-byte characters outnumber its invalid sequences at least
    ten to one: text in a legacy 8-bit code page (Latin-1, Windows-1252) hardly ever forms
    a valid UTF-8 multi-byte sequence, so it is left to the guess.
    """
    text = data.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd") - data.count("\ufffd".encode())
    multibyte = sum(1 for char in text if not char.isascii()) - text.count("\ufffd")
    return text if multibyte >= _DAMAGED_UTF8_RATIO * invalid else None


def _guess_legacy(path: Path, data: bytes) -> str:
    """Decode non-UTF-8 bytes with charset-normalizer's best guess.

    On short samples many code pages tie; among the tied best guesses the one that
    Windows-1252 would decode identically wins (otherwise "café" can come out as Urdu).
    """
    results = list(charset_normalizer.from_bytes(data))
    if not results:
        raise LoadError(path, "not UTF-8 and no known text encoding fits (binary?)")
    best = results[0]
    tied = [r for r in results if (r.chaos, r.coherence) == (best.chaos, best.coherence)]
    chosen = next((r for r in tied if _PREFERRED_LEGACY in r.could_be_from_charset), best)
    return str(chosen)


def _repair(text: str) -> str:
    """Repair mojibake: Mac Roman round trips line by line, then ftfy's encoding fixes."""
    lines = text.splitlines(keepends=True)
    return ftfy.fix_text("".join(_undo_mac_roman(line) for line in lines), _FTFY_CONFIG)


def _undo_mac_roman(line: str) -> str:
    """Return ``line`` re-decoded when it is UTF-8 that was decoded as Mac Roman.

    "–ü—Ä–µ–¥" is "Пред" whose UTF-8 bytes were read as Mac Roman. Re-encoding such a line
    as Mac Roman gives valid UTF-8, which real Mac Roman text almost never does; the
    result must also have a larger share of letters among its non-ASCII characters.
    """
    if line.isascii():
        return line
    try:
        fixed = line.encode("mac_roman").decode("utf-8")
    except UnicodeError:
        return line
    return fixed if _letter_share(fixed) > _letter_share(line) else line


def _letter_share(text: str) -> float:
    """The fraction of non-ASCII characters in ``text`` that are letters."""
    non_ascii = [char for char in text if not char.isascii()]
    return sum(char.isalpha() for char in non_ascii) / len(non_ascii) if non_ascii else 0.0
