"""The command-line tools' shared progress bars (rag.cli.ProgressBars)."""

from __future__ import annotations

import io

from rich.console import Console

from rag.cli import ProgressBars


def pipe() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_on_a_pipe_a_task_prints_a_plain_line_when_it_completes():
    console, out = pipe()
    with ProgressBars(every=3600, console=console) as progress:
        files = progress.add("files", total=3)
        progress.advance(files)
        progress.advance(files)
        assert out.getvalue() == ""  # not complete, and the interval has not passed
        progress.advance(files, note="done")
    assert out.getvalue().splitlines() == ["files: 3/3 0 s done"]


def test_on_a_pipe_a_task_of_unknown_size_prints_every_interval():
    console, out = pipe()
    with ProgressBars(every=0, console=console) as progress:
        chunks = progress.add("chunks written", total=None)
        progress.advance(chunks, 512)
        progress.advance(chunks, 100)
        progress.update(chunks, 700)
    assert [line.split(" ")[2] for line in out.getvalue().splitlines()] == [
        "512/?",
        "612/?",
        "700/?",
    ]


def test_a_task_starts_at_what_is_already_done():
    console, out = pipe()
    with ProgressBars(every=3600, console=console) as progress:
        grown = progress.add("growing bench", total=10, completed=7)
        progress.advance(grown, 3)
    assert out.getvalue().startswith("growing bench: 10/10 ")


def test_on_a_terminal_rich_draws_the_bars_and_messages_go_above_them():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with ProgressBars(every=0, console=console) as progress:
        files = progress.add("files", total=2)
        progress.print("failed a.md: empty file")
        progress.advance(files, 2)
    text = out.getvalue()
    assert "failed a.md: empty file" in text
    assert "2/2" in text and "files: 2/2" not in text  # rich's bar, not the plain line
