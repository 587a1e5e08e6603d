"""Tables that fit the terminal: columns by priority, what is left out is named."""

from __future__ import annotations

from rich.console import Console

from srpl_cli.cli._table import Column, fitted_table


def render(table, width):
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table)
    return console.export_text()


COLUMNS = [Column("method", 0, "left"), Column("OSCR", 1), Column("EER", 5), Column("FAR", 3, group="t")]
COLUMNS += [Column("FRR", 3, group="t"), Column("AUROC", 4)]
ROWS = [["anchored-cosine", "82.7±4.1", "12.0±1.0", "54.7±9.0", "6.5±4.1", "98.3±1.0"]]


def test_everything_when_wide():
    text = render(fitted_table(COLUMNS, ROWS, 200), 200)
    assert all(c.label in text for c in COLUMNS) and "not shown" not in text


def test_narrow_keeps_the_important_columns_whole_and_names_the_rest():
    table = fitted_table(COLUMNS, ROWS, 50)
    text = render(table, 50)
    assert max(len(line) for line in text.splitlines()) <= 50
    assert "82.7±4.1" in text and "…" not in text
    shown = [c.header for c in table.columns]
    assert shown[:2] == ["method", "OSCR"] and ("FAR" in shown) == ("FRR" in shown)
    flat = " ".join(text.split())
    assert "not shown at 50 columns:" in flat and "EER" in flat
