"""What the `aisoar` command writes: plain lines when piped, Rich tables, markdown, colour and a
spinner on a terminal; never a terminal control character that came from an alert."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult

# C0 and C1 controls except tab and newline, and the bidi overrides that reorder what is shown.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
PLAIN_WIDTH = 100


class Failure(Exception):
    """An error the user can act on: `main` prints it as one line on stderr and exits with ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class PipeClosed(Exception):
    """Whoever read stdout stopped reading (``aisoar report X | head``). Not an ``OSError``, so
    that it reaches `main` past the handler Typer has for a broken pipe."""


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


def is_terminal() -> bool:
    return sys.stdout.isatty()


@cache
def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, emoji=False, markup=False)


def say(text: str, style: str = "") -> None:
    """One line (or several) on stdout; ``style`` (a Rich style) applies on a terminal only."""
    try:
        if style and is_terminal():
            _console().print(_clean(text), style=style, soft_wrap=True)
        else:
            print(_clean(text), flush=True)
    except BrokenPipeError as exc:
        raise PipeClosed from exc


def _show(renderable: RenderableType) -> None:
    """A Rich renderable (a table, markdown) on the terminal."""
    try:
        _console().print(renderable)
    except BrokenPipeError as exc:
        raise PipeClosed from exc


def complain(message: str, prefix: str = "error:") -> None:
    """One line on stderr; its ``prefix`` in red on a terminal."""
    line = _clean(" ".join(message.split()))
    if prefix and sys.stderr.isatty():
        from rich.text import Text

        _console(stderr=True).print(Text.assemble((prefix, "bold red"), " ", line), soft_wrap=True)
    else:
        print(f"{prefix} {line}" if prefix else line, file=sys.stderr)


@contextmanager
def spinner(message: str) -> Iterator[None]:
    """A spinner and ``message`` on stderr while the work runs, when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    with _console(stderr=True).status(message):
        yield


@contextmanager
def working(message: str) -> Iterator[None]:
    """Long work: ``message ...`` on stdout; on a terminal a spinner instead, then ``✓ message``."""
    if not sys.stderr.isatty():
        say(f"{message} ...")
        yield
        return
    with spinner(message):
        yield
    say(f"✓ {message}", style="green")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], styles: Sequence[dict[str, str]] = ()) -> None:
    """Rows as a Rich table; ``styles[i]`` maps a value of column ``i`` to its style. Long values
    wrap, never cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    grid = Table(*headers, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in grid.columns:
        column.overflow = "fold"
    for row in rows:
        cells = [_clean(value) for value in row]
        grid.add_row(*(Text(cell, style=_style(styles, i, cell)) for i, cell in enumerate(cells)))
    _show(grid)


def _style(styles: Sequence[dict[str, str]], column: int, value: str) -> str:
    return styles[column].get(value.strip(), "") if column < len(styles) else ""


def markdown(text: str) -> None:
    """Markdown rendered: with colour on a terminal, as plain text (no markup, no escapes, every
    character of every table cell kept) when piped."""
    document = _markdown(_clean(text))
    if is_terminal():
        _show(document)
        return
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=PLAIN_WIDTH, no_color=True, color_system=None, highlight=False).print(document)
    say("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()))


def _markdown(text: str) -> RenderableType:
    """Rich's markdown, its tables folding long values (a sha256, a path) instead of cutting them.
    The classes are made here: rich.markdown is imported only when a report is shown."""
    from rich.markdown import Markdown, MarkdownElement, TableElement
    from rich.table import Table

    class FoldedTable(TableElement):
        def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
            for part in super().__rich_console__(console, options):
                for column in part.columns if isinstance(part, Table) else ():
                    column.overflow = "fold"
                yield part

    class Report(Markdown):
        elements: ClassVar[dict[str, type[MarkdownElement]]] = {**Markdown.elements, "table_open": FoldedTable}

    return Report(text, hyperlinks=False)
