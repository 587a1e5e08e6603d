"""Tables that fit the terminal: columns carry a priority, and the least important ones are left out
(and named in the caption) until the table fits, instead of rich cutting numbers to ``79.…``.

A command lists all its columns once; another metric is one more ``Column`` with its priority, and
it shows wherever there is room. Wide terminals and ``--json`` keep everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    label: str
    #: lower is more important; the highest numbers go first when space runs out (0: never dropped)
    priority: int = 0
    justify: str = "right"
    #: columns of one group (FAR and FRR of one threshold) are shown or left out together
    group: str | None = None


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int,
    title: str | None = None,
    caption: str | None = None,
    **table_kwargs: Any,
) -> Any:
    """A rich Table with as many columns (by priority) as fit in ``width`` characters."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    probe = Console(width=10_000)

    def build(idx: list[int]) -> Table:
        dropped = [columns[i].label for i in range(len(columns)) if i not in idx]
        cap = caption or ""
        if dropped:
            cap = (
                cap + "; " if cap else ""
            ) + f"not shown at {width} columns: {', '.join(dropped)} (--json: all)"
        table = Table(title=title, caption=cap or None, **table_kwargs)
        for i in idx:
            c = columns[i]
            table.add_column(c.label, justify=c.justify, no_wrap=True)
        for r in rows:
            table.add_row(*[r[i] for i in idx])
        return table

    def fits(idx: list[int]) -> bool:
        table = build(idx)
        table.caption = None  # a caption wraps; only the cells must fit
        return Measurement.get(probe, probe.options, table).maximum <= width

    # most important first; a column (or group) that does not fit is skipped, a later smaller one may fit
    keep = [i for i, c in enumerate(columns) if c.priority <= 0]
    for i in sorted(range(len(columns)), key=lambda i: (columns[i].priority, i)):
        if i in keep:
            continue
        g = columns[i].group
        candidate = sorted(
            {*keep, i, *(j for j in range(len(columns)) if g is not None and columns[j].group == g)}
        )
        if fits(candidate):
            keep = candidate
    return build(keep)
