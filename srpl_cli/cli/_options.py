"""Options shared by several commands (huggingface_hub's Annotated alias habit)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace directory (default: $SRPL_WORKSPACE, $SRPL_HOME or ~/.cache/srpl).",
        envvar="SRPL_WORKSPACE",
        show_default=False,
    ),
]
BackboneOpt = Annotated[
    str,
    typer.Option("--backbone", "-b", help="Speaker model: eres2netv2 (default), wavlm or dvector (offline)."),
]
BackboneSourceOpt = Annotated[
    Path | None,
    typer.Option(
        "--backbone-path",
        help="Load the backbone weights from this local directory/file instead of the hub cache.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress bars or status lines (warnings and errors still show)."),
]
EnrollDirArg = Annotated[
    Path, typer.Argument(help="Folder with one sub-folder of clips per speaker, or a CSV manifest.")
]
MinSpeechOpt = Annotated[
    float, typer.Option("--min-speech", help="Reject clips with less speech than this (seconds).")
]
