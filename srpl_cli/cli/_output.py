"""Where the CLI writes: results (tables, JSON) to stdout, progress/warnings/errors to stderr.

So `srpl identify --json | jq` always works: nothing but JSON ever reaches stdout in JSON mode.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# piped or redirected results keep whole table rows (rich would assume 80 columns and truncate cells)
out = Console(
    highlight=False,
    soft_wrap=False,
    width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", 160)),
)
err = Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on one line (machine readable; rich would wrap and colour it)."""
    print(json.dumps(data, default=_lenient_json, ensure_ascii=False), flush=True)


def warn(message: str) -> None:
    """``message`` is plain text (file names may hold ``[...]``, which rich would take as markup)."""
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    err.print(message, markup=False, highlight=False)


@contextmanager
def progress_bar(description: str, quiet: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, exposed as the core's ``progress(done, total)`` callable."""
    if quiet or os.environ.get("SRPL_NO_PROGRESS") or not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _lenient_json(obj: Any) -> Any:
    """Output never fails on an odd value: numpy and paths as data, anything else as its text."""
    from srpl_cli._io import json_default

    try:
        return json_default(obj)
    except TypeError:
        return str(obj)
