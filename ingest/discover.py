"""Finding the files to ingest under the paths a user gives."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from rag.loaders import SUPPORTED_SUFFIXES


@dataclass
class Discovery:
    """Files found and paths that could not be walked.

    Attributes:
        files: files to ingest, sorted, as absolute normalised paths.
        errors: ``(path, reason)`` for given paths that do not exist or folders that cannot
            be read.
        roots: the absolute folders that were walked (the scope of ``--prune``).
    """

    files: list[Path] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)


def absolute(path: Path) -> Path:
    """``path`` made absolute and normalised, without resolving symlinks."""
    return Path(os.path.normpath(path.absolute()))


def _matches(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def discover(
    paths: list[Path],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    hidden: bool = False,
) -> Discovery:
    """Walk ``paths`` for documents.

    A file given directly is taken whatever its name. In folders, files are taken when their
    suffix is supported (or they match an ``include`` glob, if any are given) and they match
    no ``exclude`` glob; globs are matched against the path relative to the folder and
    against the file name. Hidden files and folders (names starting with ``.``, such as
    ``.git``) are skipped unless ``hidden``. Symlinked folders are not followed (no loops);
    symlinked files are listed, and a loader reports a dangling or looping one.
    """
    found = Discovery()
    seen: set[Path] = set()
    for given in paths:
        path = absolute(given)
        if path.is_dir():
            found.roots.append(path)
            _walk(path, include, exclude or [], hidden, found, seen)
        elif path.exists() or path.is_symlink():
            if path not in seen:
                seen.add(path)
                found.files.append(path)
        else:
            found.errors.append((str(given), "no such file or folder"))
    found.files.sort()
    return found


def _walk(
    root: Path,
    include: list[str] | None,
    exclude: list[str],
    hidden: bool,
    found: Discovery,
    seen: set[Path],
) -> None:
    def on_error(error: OSError) -> None:
        found.errors.append((error.filename or str(root), error.strerror or str(error)))

    for folder, dirnames, filenames in os.walk(root, onerror=on_error):
        if not hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for name in filenames:
            if not hidden and name.startswith("."):
                continue
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            wanted = (
                _matches(relative, include)
                if include
                else path.suffix.lower() in SUPPORTED_SUFFIXES
            )
            if wanted and not _matches(relative, exclude) and path not in seen:
                seen.add(path)
                found.files.append(path)
