"""`srpl evaluate`: parse, call srpl_cli.evaluation, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srpl_cli.backbones import DEFAULT_BACKBONE
from srpl_cli.cli._options import (
    BackboneOpt,
    BackboneSourceOpt,
    EngineOpt,
    JsonOpt,
    QuietOpt,
    RayAddressOpt,
    SeedOpt,
    WorkersOpt,
    WorkspaceOpt,
)

HELP = """Measure open-set accuracy (ACC, AUROC, OSCR, EER, minDCF) on embedding or audio data.

[b]Examples[/b]

  srpl evaluate --data ./family --backbone dvector --shots 3 --unknown-dir ./others
  srpl evaluate --data ./qspeech-wavlm --folds 10 --known 0-4 --shots 5 \\
      --unlabeled-share 0.5
  srpl evaluate --dataset NAME --cs-my
  srpl evaluate --data ./qspeech-wavlm --folds 10 --known 0-4 --shots 5 \\
      --method cosine,srpl
  srpl evaluate --data ./qspeech-wavlm --json \\
      --checkpoint ./qspeech-wavlm/reference-checkpoint
  srpl evaluate --data ./emodb --backbone dvector --known 5 --shots 5 \\
      --enroll-glob '?????N?.flac'
  srpl evaluate --data ./emodb --backbone dvector --cohort ./others \\
      --method as-norm,anchored-cosine
"""


def register(app: typer.Typer) -> None:
    app.command("evaluate", help=HELP, no_args_is_help=True)(evaluate)


def evaluate(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Embedding dataset (emb_train/emb_test/...) or audio folder <dir>/<speaker>/<clips>.",
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="A dataset fetched with `srpl download --dataset`.")
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method", "-m", help="Comma-separated methods (cosine, srpl, ...). Folds always include cosine."
        ),
    ] = None,
    cs_my: Annotated[
        bool,
        typer.Option(
            "--cs-my",
            help="SRPL+: train with unknown samples (emb_train_unknown_control; for audio, per-fold synthesis of variants and voices).",
        ),
    ] = False,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="Score a saved model dir or the authors' released checkpoint; no fitting."
        ),
    ] = None,
    known: Annotated[
        str | None,
        typer.Option(
            "--known",
            help="Known speakers: ids (0-4, 0,2,7) or audio folder names (alice,bob); with --folds, a count "
            "drawn per fold (default: half the speakers, at least 2; fixed split: the speakers of emb_train/).",
        ),
    ] = None,
    shots: Annotated[
        int | None,
        typer.Option(
            "--shots",
            help="Enrollment clips per known speaker (default: 5 with folds; fixed split: all of emb_train/). "
            "Each known speaker needs one clip more, to test.",
            show_default=False,
        ),
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            "--folds",
            help="Random few-shot splits, paired against cosine (default: 10 for audio folders; embedding "
            "data: the fixed emb_train/ -> emb_test/ split).",
        ),
    ] = None,
    seed: SeedOpt = 0,
    unknown_dir: Annotated[
        Path | None,
        typer.Option("--unknown-dir", help="Audio of other people, always unknown test clips (audio data)."),
    ] = None,
    enroll_glob: Annotated[
        str | None,
        typer.Option("--enroll-glob", help="Only clips whose file name matches may be enrollment clips."),
    ] = None,
    cohort: Annotated[
        Path | None,
        typer.Option(
            "--cohort",
            help="Other people for cohort methods (as-norm): audio folder, or <dir>/<speaker>/<n>.npy "
            "embeddings for embedding data. Never tested.",
        ),
    ] = None,
    unlabeled_share: Annotated[
        float | None,
        typer.Option(
            "--unlabeled-share",
            help="With --folds: move this share of each fold's test clips into an unlabeled pool "
            "(pool-aware methods learn from it; all are scored on the rest).",
        ),
    ] = None,
    unlabeled: Annotated[
        list[Path] | None,
        typer.Option(
            "--unlabeled",
            help="A fixed unlabeled pool (repeatable): audio folder, or <dir>/<x>/<n>.npy embeddings; "
            "names ignored.",
        ),
    ] = None,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="Calibrate each model's threshold as tune does (FAR/FRR columns).",
        ),
    ] = True,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Write PNGs here: OSCR and DET curves of all folds, score histograms with the threshold.",
        ),
    ] = None,
    backbone: BackboneOpt = DEFAULT_BACKBONE,
    backbone_path: BackboneSourceOpt = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    workspace: WorkspaceOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    import numpy as np

    from srpl_cli import evaluation as ev
    from srpl_cli.cli._output import print_json, progress_bar
    from srpl_cli.datasets import is_embedding_dataset
    from srpl_cli.errors import UsageError
    from srpl_cli.workspace import Workspace

    if folds is not None and folds < 1:
        raise UsageError("--folds must be at least 1")
    if shots is not None and shots < 1:
        raise UsageError("--shots must be at least 1")
    if (data is None) == (dataset is None):
        raise UsageError("give exactly one of --data DIR or --dataset NAME")
    if plot is not None:  # before minutes of work, not after
        try:
            plot.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--plot {plot}: cannot create that folder ({exc.strerror or exc})") from None
    ws = Workspace(workspace)
    root = data if data is not None else ev.resolve_dataset(dataset, ws)
    if not root.exists():
        raise UsageError(f"{root}: no such file or directory")
    embedding_data = is_embedding_dataset(root)
    if checkpoint is not None and (folds or method or unlabeled_share is not None or unlabeled):
        raise UsageError(
            "--checkpoint scores a fixed model: it does not combine with --folds, --method or a pool"
        )
    if unlabeled_share is not None and not 0.0 < unlabeled_share < 1.0:
        raise UsageError("--unlabeled-share must be between 0 and 1 (exclusive)")
    if unlabeled_share is not None and not folds and embedding_data:
        raise UsageError("--unlabeled-share splits the test clips of each fold: give --folds")
    if embedding_data and engine != "local":
        raise UsageError("--engine applies to audio folders; an embedding dataset has nothing to embed")
    from srpl_cli.executors import make_executor, use_executor

    # the whole run: with --cs-my each fold's synthetic clips are embedded while the folds are fitted
    with use_executor(make_executor(engine, ray_address, workers)):
        with progress_bar("embedding clips", quiet or json_) as progress:
            if embedding_data:
                if unknown_dir is not None or enroll_glob is not None:  # would be silently ignored
                    raise UsageError(
                        "--unknown-dir and --enroll-glob apply to audio folders, not embedding datasets"
                    )
                edata = ev.load_embedding_data(root, cs_my and checkpoint is None)
            else:
                if checkpoint is not None:
                    raise UsageError("--checkpoint works on embedding datasets (emb_test/)")
                ws.ensure()
                edata, bb = ev.load_audio_data(
                    root, backbone, ws, backbone_path, unknown_dir, enroll_glob, progress
                )
                if cs_my:
                    edata.augment = ev.synthetic_augment(edata, bb, ws, seed)
                folds = folds or 10
            if cohort is not None:
                if checkpoint is not None:
                    raise UsageError("--cohort is for fitting methods; --checkpoint scores a fixed model")
                edata.cohort = ev.load_cohort(
                    cohort, embedding_data, None if embedding_data else bb, ws, progress
                )
            if unlabeled:
                edata.pool = np.concatenate(
                    [
                        ev.load_cohort(
                            d, embedding_data, None if embedding_data else bb, ws, progress, "--unlabeled"
                        )
                        for d in unlabeled
                    ]
                )
        keep = plot is not None
        with progress_bar("fitting", quiet or json_) as progress:
            if checkpoint is not None:
                report = ev.run_checkpoint(edata, checkpoint, known, keep)
            elif folds:
                has_pool = unlabeled_share is not None or edata.pool is not None
                methods = ev.parse_methods(method, folds=True, pool=has_pool)
                report = ev.run_folds(
                    edata, methods, folds, known, shots or 5, seed, calibrate, keep, progress, unlabeled_share
                )
            else:
                methods = ev.parse_methods(method, folds=False, pool=edata.pool is not None)
                report = ev.run_fixed_split(edata, methods, known, shots, seed, calibrate, keep)
    if plot is not None:
        _plot(report, plot)
    if json_:
        print_json(report.to_dict())
    else:
        _render(report)


def _plot(report, plot_dir: Path) -> None:
    from srpl_cli.cli._output import info
    from srpl_cli.plots import plot_evaluation
    from srpl_cli.protocols import FoldsReport

    folds = report.folds if isinstance(report, FoldsReport) else [report.methods]
    written = plot_evaluation(folds, plot_dir)
    info("plots: " + ", ".join(str(p) for p in written))


def _render(report) -> None:
    from rich.markup import escape

    from srpl_cli.cli._output import out
    from srpl_cli.cli._table import Column, fitted_table
    from srpl_cli.protocols import FoldsReport

    width = out.width
    if isinstance(report, FoldsReport):
        p = report.protocol
        # (metric key, label, priority): at 80 columns the lowest priorities make way (named in the caption)
        fold_cols = [("oscr", "OSCR", 1), ("acc", "ACC", 2), ("auroc", "AUROC", 4), ("eer", "EER", 6)]
        fold_cols += [("far", "FAR", 3), ("frr", "FRR", 3)]
        # the decision a user gets: balanced open-set error at the calibrated threshold (BE), and at the
        # best threshold in hindsight (BE*): the gap is what calibration loses
        fold_cols += [("balanced_error", "BE", 2), ("balanced_error_oracle", "BE*", 4)]
        columns = [Column("method", 0, "left")] + [
            Column(label, prio, group="threshold" if key in ("far", "frr") else None)
            for key, label, prio in fold_cols
        ]
        columns += [Column("ΔOSCR (wins)", 1), Column("ΔACC", 5)]
        summary = report.summary()
        rows = []
        for m in report.methods:
            s = summary[m]
            row = [escape(m)] + [
                f"{s[k]['mean']:.1f}±{s[k]['std']:.1f}" if k in s else "-" for k, _, _ in fold_cols
            ]
            d = s.get("oscr_vs_cosine")
            a = s.get("acc_vs_cosine")
            row.append(f"{d['mean']:+.1f}±{d['std']:.1f} ({d['wins']}/{d['folds']})" if d else "-")
            row.append(f"{a['mean']:+.1f}" if a else "-")
            rows.append(row)
        table = fitted_table(
            columns,
            rows,
            width,
            title=escape(
                f"{p.get('folds')} folds, known {p.get('known')}, {p.get('shots')} shots, seed {p.get('seed')}"
            ),
            caption="mean±std (%); BE: balanced open-set error at the calibrated threshold, BE* at the "
            "best one; Δ: paired difference to cosine (wins/folds)",
        )
    else:
        cols = [
            ("acc", "ACC", 1),
            ("auroc", "AUROC", 2),
            ("oscr", "OSCR", 0),
            ("oscr_legacy", "OSCR legacy", 3),
            ("eer", "EER", 2),
            ("min_dcf", "minDCF", 4),
        ]
        columns = [Column("method", 0, "left")] + [Column(label, prio) for _, label, prio in cols]
        rows = [
            [escape(m)]
            + [f"{r.metrics[k]:.4f}" if k == "min_dcf" else f"{100 * r.metrics[k]:.3f}" for k, _, _ in cols]
            for m, r in report.methods.items()
        ]
        title = str(report.protocol.get("split") or report.protocol.get("checkpoint") or "evaluation")
        table = fitted_table(columns, rows, width, title=escape(title))
    out.print(table)
