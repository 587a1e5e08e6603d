"""`srpl info`: versions, device, workspace, which backbones work offline, caches."""

from __future__ import annotations

import typer

from srpl_cli.cli._options import JsonOpt, WorkspaceOpt

HELP = """Show versions, the compute device, the workspace and which backbones work offline.

Reads only: nothing is downloaded or written. Paste its output into a bug report.

[b]Example[/b]

  srpl info --json | jq .backbones
"""


def register(app: typer.Typer) -> None:
    app.command("info", help=HELP)(info)


def info(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    from srpl_cli.cli._output import out, print_json
    from srpl_cli.diagnostics import gather
    from srpl_cli.workspace import Workspace

    data = gather(Workspace(workspace))
    if json_:
        print_json(data.to_dict())
        return
    libs = ", ".join(f"{k} {v}" for k, v in data.libraries.items() if v)
    ws = data.workspace
    models = ", ".join(f"{k} ({v})" for k, v in ws.models.items()) or "none"
    speakers = ", ".join(f"{n} {b}" for b, n in ws.speakers.items()) or "none"
    kv = Table(show_header=False, box=None, pad_edge=False)
    kv.add_column(style="bold", no_wrap=True)
    kv.add_column(overflow="fold")
    for k, v in (
        ("srpl", f"{data.srpl} (Python {data.python}, {data.platform})"),
        ("libraries", libs),
        ("device", data.device),
        ("workspace", f"{ws.path} ({_size(ws.size_bytes)})" if ws.exists else f"{ws.path} (not created yet)"),
        ("models", models),
        ("profiles", speakers),
        ("datasets", ", ".join(ws.datasets) or "none"),
        ("offline flags", ", ".join(f"{k}={v}" for k, v in data.offline_flags.items()) or "none"),
    ):
        kv.add_row(k, escape(v))
    out.print(kv)
    bb = Table(title="backbones")
    bb.add_column("name", no_wrap=True)
    bb.add_column("offline", no_wrap=True)
    bb.add_column("weights / what to do", overflow="fold")
    for b in data.backbones:
        bb.add_row(
            b.name, "[green]yes[/green]" if b.offline else "[red]no[/red]", escape(b.weights or b.note)
        )
    out.print(bb)
    caches = Table(title="caches")
    caches.add_column("cache", no_wrap=True)
    caches.add_column("size", justify="right", no_wrap=True)
    caches.add_column("files", justify="right", no_wrap=True)
    caches.add_column("path", overflow="fold")
    for c in data.caches:
        caches.add_row(
            c.name, _size(c.size_bytes), str(c.entries), escape(c.path + ("" if c.exists else " (absent)"))
        )
    out.print(caches)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the loop returns at GB")
