"""What the command-line tools (`ingest`, `rag`, `rag.eval`, `rag.bench`) share: the stderr
console, reading the settings with the options given, and how they warn and fail."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from rag.settings import Settings, parse_weights

err = Console(stderr=True)


def fail(error: Exception | str, *, soft_wrap: bool = False) -> NoReturn:
    """Print ``error`` on stderr and exit with code 2 (the input or the store cannot be used).

    Raises:
        typer.Exit: always, with code 2.
    """
    err.print(f"[red]error[/red] {escape(str(error))}", highlight=False, soft_wrap=soft_wrap)
    raise typer.Exit(2) from None


def warn(message: str) -> None:
    """Print ``message`` on stderr as a warning; the command goes on."""
    err.print(f"[yellow]warning[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def weights_option(value: str | None) -> tuple[float, float] | None:
    """A ``--weights W_DENSE,W_SPARSE`` option as a pair of floats (None when not given).

    Raises:
        typer.BadParameter: not two comma-separated numbers (typer reports it, exit code 2).
    """
    try:
        return parse_weights(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def settings_or_exit(**options: object) -> Settings:
    """The settings (``RAG_*`` variables and ``.env``) with every option that was given
    (``None`` means not given) taking precedence; an invalid setting, from an option, a
    variable or a ``.env`` line, exits with code 2 and pydantic's reason.

    Raises:
        typer.Exit: code 2, a setting is invalid.
    """
    try:
        return Settings(**{name: value for name, value in options.items() if value is not None})
    except ValueError as error:  # pydantic's ValidationError is one
        fail(error)
