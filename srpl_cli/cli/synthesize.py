"""`srpl synthesize`: speaker variants and unknown voices for SRPL+ training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srpl_cli.backbones import DEFAULT_BACKBONE
from srpl_cli.cli._options import BackboneOpt, BackboneSourceOpt, EnrollDirArg, JsonOpt, QuietOpt, SeedOpt

HELP = """Create voice variants of enrolled speakers and unknown voices for SRPL+ training.

Speaker-specific variants (age, emotion) and unknown voices, kept by the selection policy, for
`srpl tune --synthetic DIR`.

Writes DIR/known/<speaker>/*.flac, DIR/unknown/<id>/*.flac and DIR/manifest.json (provenance of every file).

[b]Examples[/b]

  srpl synthesize ./family --out ./synth
  srpl synthesize ./family --out ./synth --variants 6 --select --backbone dvector
  srpl synthesize ./family --out ./synth --engine tts --unknown-dir ./other_people
"""


def register(app: typer.Typer) -> None:
    app.command("synthesize", help=HELP, no_args_is_help=True)(synthesize)


def synthesize(
    enroll_dir: EnrollDirArg,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (new, or a previous synthesis output).")
    ],
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="perturb (offline signal transforms) or tts (zero-shot voice cloning)."
        ),
    ] = "perturb",
    variants: Annotated[int, typer.Option("--variants", help="Variants per speaker (before selection).")] = 0,
    unknown_speakers: Annotated[
        int, typer.Option("--unknown-speakers", help="Pseudo-unknown voices (before selection).")
    ] = 20,
    shots: Annotated[
        int | None,
        typer.Option("--shots", help="Use the first N clips per speaker as sources (default: all)."),
    ] = None,
    unknown_dir: Annotated[
        Path | None, typer.Option("--unknown-dir", help="Real speech of other people to add as unknowns.")
    ] = None,
    keep_known: Annotated[
        int, typer.Option("--keep-known", help="Selection: variants kept per speaker (nearest its centroid).")
    ] = 3,
    keep_unknown: Annotated[
        int, typer.Option("--keep-unknown", help="Selection: unknown clips kept per speaker.")
    ] = 12,
    max_similarity: Annotated[
        float,
        typer.Option(
            "--max-similarity", help="Selection: unknowns must have mean cosine to the speakers below this."
        ),
    ] = 0.3,
    select: Annotated[
        bool,
        typer.Option(
            "--select/--no-select",
            help="Apply the selection policy (embeds candidates with --backbone; off by default: it did not help, docs/synthesis.md).",
        ),
    ] = False,
    tts_model: Annotated[
        Path | None,
        typer.Option("--tts-model", help="Local directory of the TTS model (default: the hub model)."),
    ] = None,
    sentences: Annotated[
        Path | None, typer.Option("--sentences", help="Text file, one sentence per line, for the tts engine.")
    ] = None,
    seed: SeedOpt = 0,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    backbone_path: BackboneSourceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from srpl_cli import pipeline
    from srpl_cli.cli._output import out, print_json, progress_bar

    with progress_bar("synthesizing", quiet or json_) as progress:
        report = pipeline.synthesize(
            enroll_dir,
            out_dir,
            engine=engine,
            variants=variants,
            unknown_speakers=unknown_speakers,
            shots=shots,
            unknown_dir=unknown_dir,
            keep_known=keep_known,
            keep_unknown=keep_unknown,
            max_similarity=max_similarity,
            select=select,
            tts_model=tts_model,
            sentences=sentences,
            seed=seed,
            backbone=backbone,
            backbone_source=backbone_path,
            progress=progress,
        )
    data = report.to_dict()
    if json_:
        print_json(data)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{data['engine']} synthesis (seed {data['seed']}) -> {data['out_dir']}"))
    for col in ("role", "kept", "dropped by selection"):
        table.add_column(col, justify="left" if col == "role" else "right")
    table.add_row("speaker variants", str(data["known_kept"]), str(data["known_dropped"]))
    table.add_row("synthetic unknown clips", str(data["unknown_kept"]), str(data["unknown_dropped"]))
    table.add_row("real unknown clips", str(data["real_unknown"]), "-")
    out.print(table)
    if data["unknown_kept"] == 0 and data["unknown_dropped"] > 0:
        from srpl_cli.cli._output import warn

        warn("every synthetic unknown was dropped by --max-similarity; raise it or use --no-select")
