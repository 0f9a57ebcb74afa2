"""Finding the files to ingest under the paths a user gives."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rag.loaders import SUPPORTED_SUFFIXES

# Why a file or folder met in a walk was left out (keys of `Discovery.skipped`).
HIDDEN = "hidden"
UNSUPPORTED = "unsupported type"
NOT_INCLUDED = "not included"
EXCLUDED = "excluded"
SYMLINKED_FOLDER = "symlinked folder"


@dataclass
class Discovery:
    """Files found, paths that could not be walked, and what the walk left out.

    Attributes:
        files: files to ingest, sorted, as absolute normalised paths.
        errors: ``(path, reason)`` for given paths that do not exist or folders that cannot
            be read.
        roots: the absolute folders that were walked (the scope of ``--prune``).
        skipped: files and folders left out of the walk, by reason: `HIDDEN` (a hidden
            folder such as ``.git`` counts once), `UNSUPPORTED`, `NOT_INCLUDED`,
            `EXCLUDED`, `SYMLINKED_FOLDER` (not followed).
    """

    files: list[Path] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line: files found, path errors, and what was skipped by reason."""
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return (
            f"paths: {len(self.files)} files found, {len(self.errors)} errors · "
            f"skipped: {skipped or 'none'}"
        )


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
    symlinked files are listed, and a loader reports a dangling or looping one. Nothing
    raises: a given path that does not exist (or lies under a file, or cannot be reached)
    and a folder that cannot be listed are recorded in ``errors`` with the reason.
    """
    found = Discovery()
    seen: set[Path] = set()
    for given in paths:
        path = absolute(given)
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except OSError as error:
            if not os.path.lexists(path):
                found.errors.append((str(given), _missing(path, error)))
                continue
            is_dir = False  # a dangling or looping symlink: its loader says which
        if is_dir:
            found.roots.append(path)
            _walk(path, include, exclude or [], hidden, found, seen)
        elif path not in seen:
            seen.add(path)
            found.files.append(path)
    found.files.sort()
    return found


def _missing(path: Path, error: OSError) -> str:
    """Why a given path that cannot be found is missing."""
    if isinstance(error, NotADirectoryError):
        parent = next((p for p in path.parents if p.is_file()), None)
        if parent is not None:
            return f"no such file or folder ({parent} is a file, not a folder)"
    if isinstance(error, PermissionError):
        return "permission denied (a folder above it cannot be searched)"
    return "no such file or folder"


def _walk(
    root: Path,
    include: list[str] | None,
    exclude: list[str],
    hidden: bool,
    found: Discovery,
    seen: set[Path],
) -> None:
    def on_error(error: OSError) -> None:
        reason = (
            "permission denied (folder cannot be listed)"
            if isinstance(error, PermissionError)
            else f"folder cannot be listed ({error.strerror or error})"
        )
        found.errors.append((error.filename or str(root), reason))

    for folder, dirnames, filenames in os.walk(root, onerror=on_error):
        kept = []
        for name in sorted(dirnames):
            if not hidden and name.startswith("."):
                found.skipped[HIDDEN] += 1
            elif os.path.islink(os.path.join(folder, name)):
                found.skipped[SYMLINKED_FOLDER] += 1
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            if not hidden and name.startswith("."):
                found.skipped[HIDDEN] += 1
                continue
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if include and not _matches(relative, include):
                found.skipped[NOT_INCLUDED] += 1
            elif not include and path.suffix.lower() not in SUPPORTED_SUFFIXES:
                found.skipped[UNSUPPORTED] += 1
            elif _matches(relative, exclude):
                found.skipped[EXCLUDED] += 1
            elif path not in seen:
                seen.add(path)
                found.files.append(path)
