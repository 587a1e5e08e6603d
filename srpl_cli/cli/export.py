"""`srpl export --onnx OUT`: the tuned model (backbone + backend) as ONNX files for onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srpl_cli.cli._options import BackboneSourceOpt, JsonOpt, WorkspaceOpt

HELP = """Write the tuned model as a deployable ONNX artifact: backbone.onnx, backend.onnx, model.json and a
README of their inputs and outputs. onnxruntime is checked against PyTorch before anything is written.

[b]Examples[/b]

  srpl export --onnx ./speaker-model
  srpl export --onnx ./speaker-model --model office --json
"""


def register(app: typer.Typer) -> None:
    app.command("export", help=HELP, no_args_is_help=True)(export)


def export(
    onnx: Annotated[
        Path, typer.Option("--onnx", help="Folder to create (must not exist) for the ONNX artifact.")
    ],
    model: Annotated[str, typer.Option("--model", help="Name of the tuned model to export.")] = "default",
    backbone_path: BackboneSourceOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
) -> None:
    from srpl_cli.cli._output import out, print_json
    from srpl_cli.export import export_model
    from srpl_cli.workspace import Workspace

    report = export_model(onnx, Workspace(workspace), model, backbone_path)
    if json_:
        print_json(report.to_dict())
        return
    out.print(
        f"exported {report.backbone} + {report.backend} ({report.speakers} speakers, threshold "
        f"{report.threshold:.4f}) to {report.path}; onnxruntime vs PyTorch: embedding cos "
        f"{report.embedding_cos:.6f}, score |diff| {report.score_max_diff:.1e}",
        highlight=False,
    )
