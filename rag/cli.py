"""What the command-line tools (`ingest`, `rag`, `rag.eval`, `rag.bench`) share: the stderr
console and its progress bars, reading the settings with the options given, and how they
warn and fail."""

from __future__ import annotations

import time
from typing import NoReturn

import typer
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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


class ProgressBars:
    """Progress bars on ``console`` (stderr by default). On a terminal they are rich's bars;
    on a pipe or a file, where rich draws nothing until the end, each task prints a plain
    line (``description: done/total seconds note``) at most every ``every`` seconds and
    when it completes, so a log shows how far a long run got.

    Use as a context manager; ``add`` a task, then ``advance`` or ``update`` it.
    """

    def __init__(self, every: float = 30.0, console: Console = err) -> None:
        self.every = every
        self.console = console
        self.rich = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=console,
            )
            if console.is_terminal
            else None
        )
        self._tasks: dict[int, dict] = {}

    def __enter__(self) -> ProgressBars:
        if self.rich:
            self.rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rich:
            self.rich.__exit__(*exc)

    def add(self, description: str, total: int | None, completed: int = 0) -> int:
        """A new task of ``total`` steps (None: unknown), ``completed`` of them done."""
        if self.rich:
            task = self.rich.add_task(description, total=total, completed=completed, note="")
        else:
            task = len(self._tasks)
        now = time.perf_counter()
        self._tasks[task] = {
            "description": description, "total": total, "done": completed, "t0": now,
            "last": now,
        }  # fmt: skip
        return task

    def advance(self, task: int, steps: int = 1, note: str = "") -> None:
        """``steps`` more steps of ``task`` are done."""
        self.update(task, self._tasks[task]["done"] + steps, note)

    def update(self, task: int, completed: int, note: str = "") -> None:
        """``completed`` steps of ``task`` are done; ``note`` shows after the bar."""
        state = self._tasks[task]
        state["done"] = completed
        if self.rich:
            self.rich.update(task, completed=completed, note=note)
            return
        now = time.perf_counter()
        finished = state["total"] is not None and completed >= state["total"]
        if finished or now - state["last"] >= self.every:
            state["last"] = now
            total = "?" if state["total"] is None else state["total"]
            self.console.print(
                f"{state['description']}: {completed}/{total} {now - state['t0']:.0f} s {note}",
                highlight=False,
                soft_wrap=True,
            )

    def elapsed(self, task: int) -> float:
        """Seconds since ``task`` was added."""
        return time.perf_counter() - self._tasks[task]["t0"]

    def print(self, message: RenderableType) -> None:
        """``message`` on the console, above the bars."""
        self.console.print(message, soft_wrap=True)
