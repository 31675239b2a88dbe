"""What the command line writes, through rich: tables that fit the terminal, colour only on a
terminal (and never with ``NO_COLOR`` set), and a progress bar on stderr for work that takes more
than a couple of seconds.

Text that is not going to a terminal — ``str(report)``, a pipe, a log — is the same tables as
plain text, neither coloured nor wrapped. rich is imported only when something is drawn.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

#: A progress callback: ``(done, total, label)``, as `verify` and `benchmarks.run` call it.
Progress = Callable[[int, int, str], None]

#: Seconds of work before the progress bar appears; quicker runs never show one.
PROGRESS_DELAY = 2.0
#: Wide enough that plain text is never wrapped.
PLAIN_WIDTH = 10_000


def table(header: Sequence[str], rows: Sequence[Sequence[str | Text]]) -> Table:
    """Columns two spaces apart, no borders, the header in bold; a cell is taken as it is
    written (no markup), or as a rich Text with its own style. On a narrow terminal cells wrap
    between words."""
    from rich.table import Table
    from rich.text import Text

    cells = [[Text(c) if isinstance(c, str) else c for c in row] for row in rows]
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for i, name in enumerate(header):
        # a narrow terminal wraps a cell between words, never inside one
        texts = [name, *(row[i].plain for row in cells)]
        longest_word = max((len(w) for text in texts for w in text.split()), default=0)
        single_words = all(" " not in text.strip() for text in texts)
        grid.add_column(name, min_width=longest_word, no_wrap=single_words)
    for row in cells:
        grid.add_row(*row)
    return grid


def styled(text: str, style: str) -> Text:
    """``text`` in a rich style ("green", "bold red"), shown only where colour is."""
    from rich.text import Text

    return Text(text, style=style)


def plain(*renderables: Any) -> str:
    """The renderables as text, without colour or wrapping, trailing spaces removed."""
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=PLAIN_WIDTH, color_system=None, force_terminal=False)
    for renderable in renderables:
        console.print(renderable, soft_wrap=True)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def show(*renderables: Any) -> None:
    """Print to stdout: fitted to the terminal and coloured there, plain text anywhere else."""
    if not _is_terminal(sys.stdout):
        emit(plain(*renderables))
        return
    console = _console(sys.stdout)
    for renderable in renderables:
        console.print(renderable)


def emit(text: str) -> None:
    """Print to stdout; a reader that closes the pipe early (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Send what Python still wants to flush at exit to nowhere instead of a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@contextmanager
def progress(enabled: bool = True) -> Iterator[Progress]:
    """A `Progress` callback drawing a bar on stderr, transient, shown once the work has taken
    `PROGRESS_DELAY` seconds; nothing at all when stderr is not a terminal or ``enabled`` is
    false (``--json``)."""
    if not (enabled and _is_terminal(sys.stderr)):
        yield lambda done, total, label: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(sys.stderr),
        transient=True,
    )
    task = bar.add_task("", total=None)
    started = time.perf_counter()
    shown = ""  # the stage on the bar

    def update(done: int, total: int, label: str) -> None:
        nonlocal shown
        if not bar.live.is_started and time.perf_counter() - started >= PROGRESS_DELAY:
            bar.start()
        # drawn at once when the stage changes: a stage quicker than rich's refresh would
        # otherwise never show
        changed = bar.live.is_started and label != shown
        bar.update(task, completed=done, total=total, description=label, refresh=changed)
        shown = label

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def _is_terminal(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _console(stream: Any) -> Console:
    from rich.console import Console

    return Console(file=stream)  # rich leaves colour off when NO_COLOR is set
