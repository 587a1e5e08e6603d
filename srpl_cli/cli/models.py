"""`srpl models list|show|use|remove`: the tuned models and their versions."""

from __future__ import annotations

from typing import Annotated

import typer

from srpl_cli.cli._options import JsonOpt, WorkspaceOpt

HELP = """List, inspect, switch between and delete tuned model versions.

Every [b]srpl tune[/b] and every change of speakers adds a version; [b]models use[/b] rolls back
(or forward) by moving the CURRENT pointer, nothing is refitted.

[b]Examples[/b]

  srpl models list
  srpl models show
  srpl models use v0001
  srpl models remove v0003 --model office
"""

ModelOpt = Annotated[str, typer.Option("--model", help="Name of the tuned model.")]
VersionArg = Annotated[str, typer.Argument(help="A version such as v0002 (see: srpl models list).")]

app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode="rich")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")


@app.command(
    "list",
    help="Every model, its versions and the one in use.\n\n[b]Example[/b]\n\n  srpl models list --json",
)
def list_(workspace: WorkspaceOpt = None, json_: JsonOpt = False) -> None:
    from rich.table import Table

    from srpl_cli.cli._output import info, out, print_json
    from srpl_cli.management import list_models
    from srpl_cli.workspace import Workspace

    ws = Workspace(workspace)
    models = list_models(ws)
    if json_:
        print_json([m.to_dict() for m in models])
        return
    if not models:
        info(f"no tuned model in {ws.root} (run: srpl tune ENROLL_DIR)")
        return
    table = Table()
    for col in ("model", "version", "method", "backbone", "speakers", "created"):
        table.add_column(col, overflow="fold")
    for m in models:
        for v in reversed(m.versions):  # newest first: what a rollback usually looks for
            mark = f"[b]{v.version}[/b] *" if v.current else v.version
            table.add_row(
                m.name,
                mark,
                v.method or "?",
                v.backbone or "?",
                _speakers(v.speakers),
                (v.created or "")[:16],
            )
    out.print(table)
    out.print("* in use", style="dim")


def _speakers(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)}: {shown}" + (", ..." if len(names) > limit else "")


@app.command(
    "show",
    help="What one model version holds (default: the one in use).\n\n[b]Example[/b]\n\n  srpl models show office --at v0002",
)
def show(
    name: Annotated[str, typer.Argument(help="Model name.")] = "default",
    at: Annotated[
        str | None, typer.Option("--at", help="Show this version instead of the one in use.")
    ] = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    from rich.markup import escape
    from rich.table import Table

    from srpl_cli.cli._output import out, print_json
    from srpl_cli.management import show_model
    from srpl_cli.workspace import Workspace

    d = show_model(Workspace(workspace), name, at)
    if json_:
        print_json(d.to_dict())
        return
    t = d.tune
    cal = t.get("calibration") or {}
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows = [
        ("model", f"{d.name} {d.version}" + (" (in use)" if d.current else "")),
        ("method", f"{d.backend} " + ", ".join(f"{k}={v}" for k, v in sorted(d.params.items()))),
        ("backbone", f"{t.get('backbone')} ({t.get('backbone_id')})"),
        ("speakers", f"{len(t.get('speakers', []))}: {', '.join(t.get('speakers', []))}"),
        ("samples", f"{t.get('n_enroll')} enrollment, {t.get('n_unknown')} unknown; shots {t.get('shots')}"),
        ("threshold", f"{d.threshold:.4f}: {cal.get('rule', '?')}"),
        ("held out", _heldout(cal)),
        ("tuned from", str(t.get("source"))),
        ("path", d.path),
    ]
    if t.get("refit"):
        r = t["refit"]
        rows.insert(4, ("refit", f"{r['action']} {r['speaker']} on {r['from_version']}"))
    for k, v in rows:
        table.add_row(k, escape(v))
    out.print(table)


def _heldout(cal: dict) -> str:
    parts = []
    if "heldout_far" in cal:
        parts.append(f"false accepts {cal['heldout_far']:.1%} of {cal.get('heldout_impostor')}")
    if "heldout_frr" in cal:
        parts.append(f"false rejects {cal['heldout_frr']:.1%} of {cal.get('heldout_genuine')}")
    return ", ".join(parts) or "-"


@app.command(
    "use",
    help="Make VERSION the one in use (nothing is refitted).\n\n[b]Example[/b]\n\n  srpl models use v0001",
    no_args_is_help=True,
)
def use(
    version: VersionArg, model: ModelOpt = "default", workspace: WorkspaceOpt = None, json_: JsonOpt = False
) -> None:
    from srpl_cli.cli._output import out, print_json
    from srpl_cli.management import use_model
    from srpl_cli.workspace import Workspace

    mv = use_model(Workspace(workspace), version, model)
    if json_:
        print_json({"model": mv.name, "version": mv.version, "path": str(mv.path)})
    else:
        out.print(f"model '{mv.name}' now uses {mv.version}", markup=False)


@app.command(
    "remove",
    help="Delete VERSION (not the one in use).\n\n[b]Example[/b]\n\n  srpl models remove v0001",
    no_args_is_help=True,
)
def remove(
    version: VersionArg, model: ModelOpt = "default", workspace: WorkspaceOpt = None, json_: JsonOpt = False
) -> None:
    from srpl_cli.cli._output import out, print_json
    from srpl_cli.management import remove_model_version
    from srpl_cli.workspace import Workspace

    mv = remove_model_version(Workspace(workspace), version, model)
    if json_:
        print_json({"model": mv.name, "removed": mv.version})
    else:
        out.print(f"removed model '{mv.name}' {mv.version}", markup=False)
