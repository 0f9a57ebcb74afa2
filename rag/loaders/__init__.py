"""Document loading: one file path in, one `Document` of titled, sectioned plain text out."""

from __future__ import annotations

import errno
import importlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from rag.types import Document, Section

__all__ = [
    "SUPPORTED_SUFFIXES",
    "FileBytes",
    "LoadError",
    "load_document",
    "parse_document",
    "read_file",
]

# Lower-case suffix -> the module of this package that parses it.
_FORMATS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_FORMATS)

Parsed = tuple[str | None, list[Section]]
"""What a format module's ``parse(path, data)`` returns: its title (if any) and sections."""


class LoadError(Exception):
    """A file that cannot be turned into a `Document`, with a short human reason.

    Attributes:
        path: the path that was being loaded.
        reason: what is wrong with it ("empty file", "PDF is password-protected", ...).
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FileBytes:
    """A file's content, read once.

    Attributes:
        data: every byte of the file (never empty).
        mtime_ns: the file's modification time when it was read, ns since the epoch.
    """

    data: bytes
    mtime_ns: int


def load_document(path: Path, *, max_bytes: int = 50_000_000) -> Document:
    """Load one Markdown, plain-text, HTML, PDF or DOCX file as a `Document`.

    The same as ``parse_document(path, read_file(path, max_bytes=max_bytes).data)``.

    Args:
        path: the file to load; its suffix (case-insensitive) picks the parser.
        max_bytes: files larger than this are refused before being read.

    Returns:
        The document: ``source`` is ``str(path)``; ``title`` comes from the file (front
        matter, first heading, ``<title>``, PDF/DOCX metadata) or else the file stem;
        ``sections`` hold at least one non-empty section.

    Raises:
        LoadError: the path is missing, not a regular file, unreadable, too large, of an
            unsupported type, or its content is empty, damaged or holds no text.
    """
    return parse_document(path, read_file(path, max_bytes=max_bytes).data)


def read_file(path: Path, *, max_bytes: int = 50_000_000) -> FileBytes:
    """Read the bytes of a file of a supported type, once, for `parse_document`.

    Reading once and parsing those very bytes lets a caller hash exactly what it parses,
    even when the file changes meanwhile.

    Args:
        path: the file; symlinks are followed.
        max_bytes: files larger than this are refused before being read (and a file that
            grows past it while being read is refused too).

    Returns:
        The bytes and the modification time.

    Raises:
        LoadError: the path is missing, a dangling symlink or a symlink loop, not a regular
            file (a folder, pipe, socket or device: never opened), unreadable, of an
            unsupported type, larger than ``max_bytes``, or empty.
    """
    size = _file_size(path)
    _format(path)
    if size > max_bytes:
        raise LoadError(path, _too_large(size, max_bytes))
    read = _read(path, max_bytes)
    if not read.data:
        raise LoadError(path, "empty file")
    return read


def parse_document(path: Path, data: bytes) -> Document:
    """Parse the bytes of a file as a `Document`; nothing is read from disk.

    Args:
        path: the file the bytes came from: its suffix (case-insensitive) picks the parser,
            it is the document's ``source`` and it is named in errors.
        data: the file's bytes, as `read_file` returns them.

    Returns:
        The document, as `load_document` describes it.

    Raises:
        LoadError: the suffix is unsupported, or the content is empty, damaged or holds no
            text.
    """
    module = _format(path)
    if not data:
        raise LoadError(path, "empty file")
    # Imported on use: the format modules import LoadError from this package, and pypdf,
    # python-docx and lxml are only loaded once a file needs them.
    parser = importlib.import_module(f"{__name__}.{module}")
    title, sections = parser.parse(path, data)
    return Document(source=str(path), title=title or path.stem, sections=sections)


def _format(path: Path) -> str:
    """The name of the format module that parses ``path``, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        shown = suffix or "no suffix"
        raise LoadError(path, f"unsupported file type ({shown}); supported: {_supported()}")
    return _FORMATS[suffix]


def _supported() -> str:
    """The supported suffixes, for error messages."""
    return " ".join(sorted(SUPPORTED_SUFFIXES))


def _file_size(path: Path) -> int:
    """The size of the regular file at ``path`` (symlinks followed)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise LoadError(path, _os_reason(path, exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(path, _not_regular(info.st_mode))
    return info.st_size


def _read(path: Path, max_bytes: int) -> FileBytes:
    """The file's bytes, read once, refused past ``max_bytes`` (it may have grown)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
            mtime_ns = os.fstat(handle.fileno()).st_mtime_ns
    except OSError as exc:
        raise LoadError(path, _os_reason(path, exc)) from exc
    if len(data) > max_bytes:
        raise LoadError(path, _too_large(len(data), max_bytes))
    return FileBytes(data, mtime_ns)


def _not_regular(mode: int) -> str:
    """Why a path that exists is not loadable as a file."""
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    return "not a regular file (device, socket or pipe)"


def _too_large(size: int, cap: int) -> str:
    """The reason for a file over the size cap."""
    return f"file too large: {_human_size(size)} > {_human_size(cap)} cap"


def _human_size(size: int) -> str:
    """``size`` bytes in decimal units: "512 bytes", "3.4 kB", "61.2 MB"."""
    if size < 1_000:
        return f"{size} bytes"
    if size < 1_000_000:
        return f"{size / 1_000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


def _os_reason(path: Path, exc: OSError) -> str:
    """A short reason for an error from stat() / open() / read()."""
    if isinstance(exc, FileNotFoundError):
        return (
            "broken symlink (target missing)" if path.is_symlink() else "file not found (vanished?)"
        )
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read file ({exc.strerror or exc})"
