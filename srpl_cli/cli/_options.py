"""Options shared by several commands (huggingface_hub's Annotated alias habit)."""

from __future__ import annotations

import math
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


def finite_number(value: float | None) -> float | None:
    """Option callback: NaN and infinities are not numbers a user means."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, not {value}")
    return value


def non_negative_seconds(value: float) -> float:
    """Option callback for durations: finite and >= 0."""
    finite_number(value)
    if value < 0:
        raise typer.BadParameter(f"must be 0 or more seconds, not {value:g}")
    return value


def positive_number(value: float) -> float:
    """Option callback for sizes and limits: finite and > 0."""
    finite_number(value)
    if value <= 0:
        raise typer.BadParameter(f"must be positive, not {value:g}")
    return value


MinSpeechOpt = Annotated[
    float,
    typer.Option(
        "--min-speech",
        help="Reject clips with less detected speech than this (seconds; see docs/usage.md, speech detection).",
        callback=non_negative_seconds,
    ),
]
AllowMissingOpt = Annotated[
    bool,
    typer.Option(
        "--allow-missing",
        help="Go on when a speaker folder yields no usable clip (unreadable, unsupported files) instead of failing.",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where clips are embedded: local (this process) or ray (Ray Data; pip install 'srpl-cli\\[ray]').",
        envvar="SRPL_ENGINE",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        # no envvar: a $RAY_ADDRESS in the shell must not turn the local engine into a usage error;
        # the Ray executor reads it itself
        help="Ray cluster to join with --engine ray (default: $RAY_ADDRESS, else a local Ray for this run).",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Backbone workers with --engine ray (default: one per GPU, else one per CPU).",
        show_default=False,
    ),
]
