"""`srpl tune`: enroll, fit the open-set backend, calibrate the rejection threshold, save a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srpl_cli.backbones import DEFAULT_BACKBONE
from srpl_cli.cli._options import (
    AllowMissingOpt,
    BackboneOpt,
    BackboneSourceOpt,
    EngineOpt,
    EnrollDirArg,
    JsonOpt,
    MinSpeechOpt,
    QuietOpt,
    RayAddressOpt,
    SeedOpt,
    WorkersOpt,
    WorkspaceOpt,
)

HELP = """Tune the open-set speaker model on ENROLL_DIR/<speaker>/<clips> and make it the one in use.

Rejection threshold: set where false accepts equal false rejects on held-out data (enrollment clips
held out, enrolled speakers left out as strangers, plus any --unknown-dir / --synthetic unknowns), or at
--target-far. A failed or interrupted tune leaves the previous model in use.

Unlabeled pool: --unlabeled DIR adds clips of unknown identity (recordings the device heard: family,
TV, visitors; minutes, not hours) to the workspace's pool; every tune learns from the stored pool
(pool-propagation by default) and reads the threshold from its score mixture. --no-pool ignores it.

[b]Examples[/b]

  srpl tune ./family --shots 5
  srpl tune ./family --shots 5 --unlabeled ./heard_this_week
  srpl tune ./family --shots 5 --backbone dvector --unknown-dir ./other_people
  srpl tune ./family --shots 5 --synthetic ./synth     (alias --cs-my)
"""


def register(app: typer.Typer) -> None:
    app.command("tune", help=HELP, no_args_is_help=True)(tune)


def tune(
    enroll_dir: EnrollDirArg,
    shots: Annotated[
        int, typer.Option("--shots", help="Enrollment clips per speaker (first N usable, by name).")
    ] = 5,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    backbone_path: BackboneSourceOpt = None,
    method: Annotated[
        str | None, typer.Option("--method", "-m", help="Open-set backend (default: the best measured).")
    ] = None,
    unknown_dir: Annotated[
        Path | None, typer.Option("--unknown-dir", help="Speech of people who are not enrolled.")
    ] = None,
    synthetic: Annotated[
        Path | None,
        typer.Option(
            "--synthetic", "--cs-my", help="Output of `srpl synthesize`: variants + unknown voices."
        ),
    ] = None,
    unlabeled: Annotated[
        list[Path] | None,
        typer.Option(
            "--unlabeled",
            help="Clips of unknown identity (enrolled people and strangers; any layout) to add to the "
            "workspace's pool and learn from. Repeatable.",
        ),
    ] = None,
    no_pool: Annotated[
        bool, typer.Option("--no-pool", help="Ignore the stored unlabeled pool (enrollment only).")
    ] = False,
    target_far: Annotated[
        float | None,
        typer.Option(
            "--target-far", help="Aim the threshold at this false-accept rate (default: equal error rate)."
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="Name of the model to save (several can coexist).")
    ] = "default",
    seed: SeedOpt = 0,
    min_speech: MinSpeechOpt = 0.5,
    allow_missing: AllowMissingOpt = False,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    from srpl_cli import pipeline
    from srpl_cli.cli._output import out, print_json, progress_bar, warn
    from srpl_cli.cli.enroll import render_enrollment
    from srpl_cli.errors import UsageError
    from srpl_cli.workspace import Workspace

    if target_far is not None and not 0.0 < target_far < 1.0:
        raise UsageError("--target-far must be between 0 and 1")
    from srpl_cli.executors import make_executor, use_executor

    executor = make_executor(engine, ray_address, workers)
    with use_executor(executor), progress_bar("embedding clips", quiet or json_) as progress:
        report = pipeline.tune(
            enroll_dir,
            Workspace(workspace),
            shots=shots,
            backbone=backbone,
            method=method,
            unknown_dir=unknown_dir,
            synthetic=synthetic,
            seed=seed,
            target_far=target_far,
            model_name=model,
            backbone_source=backbone_path,
            progress=progress,
            min_speech_s=min_speech,
            allow_missing=allow_missing,
            unlabeled=unlabeled or (),
            use_pool=not no_pool,
        )
    if json_:
        print_json(report.to_dict())
        return
    render_enrollment(report.enrollment)
    cal = report.calibration
    used = sorted(s.clips_used for s in report.enrollment.speakers if s.clips_used)
    clips = f"{used[0]}" if used[0] == used[-1] else f"{used[0]}-{used[-1]}"
    out.print(
        f"tuned [b]{report.method}[/b] on {len(report.speakers)} speakers x {clips} clips "
        f"({report.backbone}, {report.n_unknown} unknown samples) -> model '{report.model}' {report.version}"
    )
    if report.n_pool:
        out.print(f"unlabeled pool: {report.n_pool} clips ({report.n_pool_added} added now)", highlight=False)
        pool_cal = cal.get("pool") or {}
        if pool_cal.get("strangers") is False:
            warn("the unlabeled pool seems to hold enrolled people only; add recordings of other voices")
        elif pool_cal and pool_cal.get("threshold") is None and pool_cal.get("reason"):
            out.print(f"pool not used for the threshold: {pool_cal['reason']}", highlight=False)
    out.print(f"threshold {report.threshold:.4f}: {cal['rule']}", highlight=False)
    rates = []
    if "heldout_far" in cal:
        rates.append(f"false accepts {100 * cal['heldout_far']:.1f} % of {cal['heldout_impostor']} impostor")
    if "heldout_frr" in cal:
        rates.append(f"false rejects {100 * cal['heldout_frr']:.1f} % of {cal['heldout_genuine']} genuine")
    if rates:
        out.print("held-out at this threshold: " + ", ".join(rates) + " scores", highlight=False)
