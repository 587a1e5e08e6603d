"""What the commands do, as plain functions returning result dataclasses (the Python API).

audio -> backbone -> embeddings (cached) -> open-set backend -> workspace -> identify / evaluate.
Nothing here prints or exits; the CLI renders the results and maps ``SrplError`` to exit codes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._version import __version__
from srpl_cli.backbones import DEFAULT_BACKBONE
from srpl_cli.calibration import DEFAULT_TARGET_FAR, fit_backend
from srpl_cli.errors import DataError, UsageError
from srpl_cli.identifier import (  # noqa: F401 - load_model, current_model: Python API
    Identification,
    Identifier,
    current_model,
    load_model,
)
from srpl_cli.workspace import DEFAULT_MODEL, Workspace, check_name

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None] | None

#: the method `srpl tune` uses unless told otherwise (evidence in docs/accuracy.md)
DEFAULT_METHOD = "anchored-cosine"
#: the method `srpl tune` uses when it has an unlabeled pool (``--unlabeled``; docs/accuracy.md)
DEFAULT_POOL_METHOD = "pool-propagation"


# ---------------------------------------------------------------- results
@dataclass
class ClipIssue:
    path: str
    reason: str


@dataclass
class SpeakerEnrollment:
    speaker: str
    clips_found: int
    clips_used: int
    warnings: list[str] = field(default_factory=list)
    duration_s: float = 0.0


@dataclass
class EnrollReport:
    backbone: str
    speakers: list[SpeakerEnrollment]
    problems: list[ClipIssue]
    workspace: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TuneReport:
    model: str
    version: str
    method: str
    backbone: str
    speakers: list[str]
    shots: int
    n_unknown: int
    threshold: float
    calibration: dict[str, Any]
    enrollment: EnrollReport
    path: str
    #: clips in the unlabeled pool the model learned from, and how many this tune added
    n_pool: int = 0
    n_pool_added: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- embeddings
def load_backbone(name: str, source: str | Path | None = None) -> Any:
    from srpl_cli.backbones import get_backbone

    return get_backbone(name, source=source)


def embed_clips(
    paths: Sequence[Path],
    backbone: Any,
    workspace: Workspace | None,
    progress: Progress = None,
    min_speech_s: float = 0.5,
) -> Any:
    """Embed clips through the workspace cache (no clip is embedded twice). Returns ExtractionResult."""
    from srpl_cli.embeddings import EmbeddingCache, extract_embeddings
    from srpl_cli.executors import current_executor

    cache = None
    if workspace is not None:
        workspace.ensure()
        cache = EmbeddingCache(workspace.cache_dir)
    return extract_embeddings(
        list(paths),
        backbone,
        cache=cache,
        progress=progress,
        min_speech_s=min_speech_s,
        executor=current_executor(),  # --engine: set by the command with executors.use_executor
    )


def _embed_map(
    paths: Sequence[Path], backbone: Any, workspace: Workspace, progress: Progress, min_speech_s: float
) -> tuple[dict[str, tuple[np.ndarray, Any]], list[ClipIssue]]:
    """path -> (embedding, quality) for the usable clips, and the problems of the others."""
    if not paths:
        return {}, []
    res = embed_clips(paths, backbone, workspace, progress, min_speech_s)
    ok = {str(p): (res.embeddings[i], res.qualities[i]) for i, p in enumerate(res.paths_ok)}
    return ok, [ClipIssue(str(p), r) for p, r in res.problems]


def _embed_speakers(
    speakers: dict[str, list[Path]],
    backbone: Any,
    workspace: Workspace,
    shots: int | None,
    progress: Progress,
    min_speech_s: float,
) -> tuple[dict[str, np.ndarray], dict[str, list[Path]], EnrollReport]:
    """Embed each speaker's clips; with ``shots``, the first N usable clips (in name order)."""
    for name in speakers:
        check_name(name, "speaker name")
    # with --shots, embed only a few clips more than needed, and the rest only if too many fail
    first = {s: c if shots is None else c[: shots + 2] for s, c in speakers.items()}
    ok, problems = _embed_map(
        [p for c in first.values() for p in c], backbone, workspace, progress, min_speech_s
    )
    rest: list[Path] = []
    for s, clips in speakers.items():
        if shots is not None and sum(str(p) in ok for p in first[s]) < shots:
            rest += clips[len(first[s]) :]
    more_ok, more_problems = _embed_map(rest, backbone, workspace, None, min_speech_s)
    ok.update(more_ok)
    problems += more_problems
    X_by: dict[str, np.ndarray] = {}
    used: dict[str, list[Path]] = {}
    rows = []
    for s, clips in speakers.items():
        chosen = [p for p in clips if str(p) in ok][:shots]
        warnings = [f"{Path(p).name}: {w}" for p in chosen for w in ok[str(p)][1].warnings]
        if shots is not None and len(chosen) < shots:
            warnings.append(f"only {len(chosen)} usable clip(s), {shots} asked for")
        duration = sum(ok[str(p)][1].duration_s for p in chosen)
        rows.append(SpeakerEnrollment(s, len(clips), len(chosen), warnings, round(duration, 2)))
        if chosen:
            X_by[s] = np.stack([ok[str(p)][0] for p in chosen]).astype(np.float32)
            used[s] = list(chosen)
    return X_by, used, EnrollReport(backbone.name, rows, problems, str(workspace.root))


# ---------------------------------------------------------------- enroll
def _check_min_speech(min_speech_s: float) -> None:
    if not math.isfinite(min_speech_s) or min_speech_s < 0:
        raise UsageError(f"--min-speech must be 0 or more seconds, not {min_speech_s}")


def enroll(
    source: str | Path,
    workspace: Workspace | None = None,
    backbone: str = DEFAULT_BACKBONE,
    shots: int | None = None,
    backbone_source: str | Path | None = None,
    progress: Progress = None,
    min_speech_s: float = 0.5,
    _backbone: Any = None,
    allow_missing: bool = False,
) -> tuple[EnrollReport, dict[str, np.ndarray], dict[str, list[Path]]]:
    """Embed ``source`` (``<dir>/<speaker>/<clips>`` or a CSV manifest) and store speaker profiles.

    A speaker left with no usable clip is an error unless ``allow_missing`` (then a warning): a model
    silently missing a person would call that person "unknown".
    """
    from srpl_cli.datasets import read_speaker_folders

    if shots is not None and shots < 1:
        raise UsageError("--shots must be at least 1")
    _check_min_speech(min_speech_s)
    speakers = read_speaker_folders(source, allow_missing=allow_missing)  # before touching the workspace
    ws = (workspace or Workspace()).check_writable()  # before the long embedding work
    bb = _backbone or load_backbone(backbone, backbone_source)
    X_by, used, report = _embed_speakers(speakers, bb, ws, shots, progress, min_speech_s)
    if not X_by:
        first = f", first: {report.problems[0].path}: {report.problems[0].reason}" if report.problems else ""
        raise DataError(
            f"{source}: no usable clip for any speaker ({len(report.problems)} problem(s){first})"
        )
    lost = [s for s in speakers if s not in X_by]
    if lost:
        reasons = {
            s: next((p.reason for p in report.problems if Path(p.path) in speakers[s]), "?") for s in lost
        }
        listed = "; ".join(f"'{s}' (e.g. {r})" for s, r in reasons.items())
        if not allow_missing:
            raise DataError(
                f"{source}: {len(lost)} speaker(s) with no usable clip: {listed}",
                hint="fix their clips, or pass --allow-missing to go on without them",
            )
        log.warning("left out %d speaker(s) with no usable clip: %s", len(lost), listed)
    with ws.lock():
        for s, X in X_by.items():
            info = {
                "clips": [str(p) for p in used[s]],
                "backbone_id": bb.identifier,
                "source": str(source),
                "srpl_version": __version__,
            }
            ws.save_profile(bb.name, s, X, info)
    return report, X_by, used


def _source_rows(
    sources: dict[str, str],
    clips_per_speaker: list[list[Path]],
    variant_speaker: dict[str, int] | None = None,
) -> dict[str, int]:
    """Variant file -> row of its source clip among the enrollment rows (speakers in order).

    Recorded sources are matched by resolved path, else by file name when that is unambiguous (the
    manifest keeps paths as given to `srpl synthesize`, which may be relative to another directory).
    With ``variant_speaker`` (variant -> index into ``clips_per_speaker``), a match to another
    speaker's clip is dropped: a variant is labelled with its own speaker and must follow that
    speaker's clip.
    """
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    speaker_of_row: list[int] = []
    for k, clips in enumerate(clips_per_speaker):
        for p in clips:
            by_path[str(Path(p).resolve())] = len(speaker_of_row)
            by_name.setdefault(Path(p).name, []).append(len(speaker_of_row))
            speaker_of_row.append(k)
    out = {}
    for variant, src in sources.items():
        r = by_path.get(str(Path(src).resolve()))
        if r is None and len(by_name.get(Path(src).name, [])) == 1:
            r = by_name[Path(src).name][0]
        if r is None or (variant_speaker is not None and variant_speaker.get(variant) != speaker_of_row[r]):
            continue
        out[variant] = r
    return out


# ---------------------------------------------------------------- tune
def tune(
    source: str | Path,
    workspace: Workspace | None = None,
    shots: int | None = 5,
    backbone: str = DEFAULT_BACKBONE,
    method: str | None = None,
    unknown_dir: str | Path | None = None,
    synthetic: str | Path | None = None,
    seed: int = 0,
    target_far: float | None = DEFAULT_TARGET_FAR,
    model_name: str = DEFAULT_MODEL,
    backbone_source: str | Path | None = None,
    progress: Progress = None,
    min_speech_s: float = 0.5,
    allow_missing: bool = False,
    unlabeled: Sequence[str | Path] = (),
    use_pool: bool = True,
) -> TuneReport:
    """Enroll (reusing cached embeddings), fit the backend, calibrate, and save a new model version.

    ``unlabeled``: folders of clips of unknown identity, added to the workspace's unlabeled pool
    (``srpl_cli.pool``); the whole stored pool is used unless ``use_pool`` is False. ``method`` None:
    ``DEFAULT_POOL_METHOD`` with a pool, else ``DEFAULT_METHOD``.
    """
    from srpl_cli.backends import backend_class
    from srpl_cli.datasets import collect_audio

    if method is not None:
        if backend_class(method).uses_cohort and unknown_dir is None and synthetic is None:
            from srpl_cli.backends.as_norm import NEEDS_COHORT

            raise UsageError(NEEDS_COHORT)  # before any audio work, like a bad --method
        if backend_class(method).uses_pool and not use_pool:
            from srpl_cli.backends.pool_propagation import NEEDS_POOL

            raise UsageError(NEEDS_POOL)
    if unlabeled and not use_pool:
        raise UsageError("--unlabeled adds clips to the pool; it does not combine with --no-pool")
    for d in unlabeled:  # a typo must fail before minutes of embedding
        if not Path(d).is_dir():
            raise DataError(f"{d}: no such directory (--unlabeled)")
    check_name(model_name, "model name")
    from srpl_cli.datasets import read_speaker_folders

    _check_min_speech(min_speech_s)
    # fail fast, before creating the workspace: a missing or bad source, then an unwritable workspace
    read_speaker_folders(source, allow_missing=allow_missing)
    ws = (workspace or Workspace()).check_writable()
    bb = load_backbone(backbone, backbone_source)
    if method is not None and backend_class(method).uses_pool and not unlabeled:
        from srpl_cli.pool import load_pool

        if not len(load_pool(ws, bb.name, bb.identifier)):  # before minutes of embedding
            from srpl_cli.backends.pool_propagation import NEEDS_POOL

            raise DataError(NEEDS_POOL)
    report, X_by, used = enroll(
        source,
        ws,
        backbone,
        shots,
        backbone_source,
        progress,
        min_speech_s,
        _backbone=bb,
        allow_missing=allow_missing,
    )
    if len(X_by) < 2:
        raise DataError(f"{source}: need at least 2 speakers with usable clips, got {len(X_by)}")
    names = sorted(X_by)
    X = np.concatenate([X_by[s] for s in names])
    y = np.concatenate([[s] * len(X_by[s]) for s in names])
    unknown_parts: list[np.ndarray] = []
    sources: dict[str, Any] = {}
    origin = None  # set when synthetic variants join the enrollment rows
    if synthetic is not None:
        from srpl_cli.synthesis.run import read_synthetic, variant_sources

        known_syn, unknown_syn = read_synthetic(Path(synthetic))
        extra_paths = [p for s in names for p in known_syn.get(s, [])]
        if extra_paths:
            res = embed_clips(extra_paths, bb, ws, None, min_speech_s)
            spk_of = {str(p): s for s in names for p in known_syn.get(s, [])}
            source_row = _source_rows(
                variant_sources(Path(synthetic)),
                [used[s] for s in names],
                {p: names.index(s) for p, s in spk_of.items()},
            )
            origin = np.concatenate(
                [np.arange(len(X)), [source_row.get(str(p), -1) for p in res.paths_ok]]
            ).astype(np.int64)
            X = np.concatenate([X, res.embeddings])
            y = np.concatenate([y, [spk_of[str(p)] for p in res.paths_ok]])
        if unknown_syn:
            res = embed_clips(unknown_syn, bb, ws, None, min_speech_s)
            unknown_parts.append(res.embeddings)
        sources["synthetic"] = {"dir": str(synthetic), "known": len(extra_paths), "unknown": len(unknown_syn)}
    if unknown_dir is not None:
        res = embed_clips(collect_audio([unknown_dir]), bb, ws, None, min_speech_s)
        if len(res.paths_ok) == 0:
            raise DataError(f"{unknown_dir}: no usable unknown-speaker clip")
        unknown_parts.append(res.embeddings)
        sources["unknown_dir"] = {"dir": str(unknown_dir), "clips": len(res.paths_ok)}
    X_unknown = np.concatenate(unknown_parts) if unknown_parts else None
    pool, added = _tune_pool(ws, bb, unlabeled, use_pool, min_speech_s, progress)
    if method is None:
        method = DEFAULT_POOL_METHOD if len(pool) else DEFAULT_METHOD
    elif backend_class(method).uses_pool and not len(pool):
        from srpl_cli.backends.pool_propagation import NEEDS_POOL

        raise DataError(NEEDS_POOL)
    pool_X = pool.X if len(pool) else None
    model, calibration = fit_backend(method, X, y, X_unknown, seed, target_far, origin=origin, pool=pool_X)
    if len(pool):
        by_source: dict[str, int] = {}
        for c in pool.clips:
            by_source[c.get("source", "?")] = by_source.get(c.get("source", "?"), 0) + 1
        sources["unlabeled_pool"] = {"clips": len(pool), "added": added, "by_source": by_source}
    tune_info = {
        "method": method,
        "backbone": bb.name,
        "backbone_id": bb.identifier,
        # absolute: identify reuses it from whatever directory it is run in
        "backbone_source": str(Path(backbone_source).expanduser().absolute()) if backbone_source else None,
        "speakers": names,
        "shots": shots,
        "clips": {s: [str(p) for p in used[s]] for s in names},
        "n_enroll": int(len(X)),
        "n_unknown": int(0 if X_unknown is None else len(X_unknown)),
        "unknown_sources": sources,
        "seed": seed,
        "calibration": calibration,
        "source": str(source),
        "srpl_version": __version__,
    }
    with ws.lock():
        mv = ws.save_model(model, tune_info, model_name)
    return TuneReport(
        model_name,
        mv.version,
        method,
        bb.name,
        names,
        shots or 0,
        tune_info["n_unknown"],
        float(model.threshold_),
        calibration,
        report,
        str(mv.path),
        len(pool),
        added,
    )


def _tune_pool(
    ws: Workspace,
    bb: Any,
    unlabeled: Sequence[str | Path],
    use_pool: bool,
    min_speech_s: float,
    progress: Progress,
) -> tuple[Any, int]:
    """Embed ``unlabeled`` folders into the stored pool; return (the pool to learn from, clips added)."""
    from srpl_cli.datasets import collect_audio
    from srpl_cli.pool import Pool, add_to_pool, load_pool

    if not use_pool:
        return Pool(np.zeros((0, 0), np.float32)), 0
    added = 0
    for d in unlabeled:
        res = embed_clips(collect_audio([d]), bb, ws, progress, min_speech_s)
        if len(res.paths_ok) == 0:
            raise DataError(f"{d}: no usable clip (--unlabeled)")
        _, n = add_to_pool(
            ws, bb.name, bb.identifier, res.embeddings, res.paths_ok, res.hashes, f"tune --unlabeled {d}"
        )
        added += n
    return load_pool(ws, bb.name, bb.identifier), added


# ---------------------------------------------------------------- identify
def identify(
    clips: Sequence[str | Path],
    workspace: Workspace | None = None,
    model_name: str = DEFAULT_MODEL,
    top_k: int = 3,
    backbone_source: str | Path | None = None,
    threshold: float | None = None,
    progress: Progress = None,
    min_speech_s: float = 0.5,
) -> list[Identification]:
    """Who speaks in each clip: a speaker of the tuned model, or None (unknown)."""
    answers, _, _ = _identify(
        clips, workspace, model_name, top_k, backbone_source, threshold, progress, min_speech_s
    )
    return answers


def identify_and_learn(
    clips: Sequence[str | Path],
    workspace: Workspace | None = None,
    model_name: str = DEFAULT_MODEL,
    top_k: int = 3,
    backbone_source: str | Path | None = None,
    threshold: float | None = None,
    progress: Progress = None,
    min_speech_s: float = 0.5,
) -> tuple[list[Identification], int, int]:
    """``identify --learn``: ``identify``, then add the usable clips to the unlabeled pool of the model's
    backbone (their embeddings and content hashes from that same run). Returns (answers, clips added,
    pool size); the next ``tune`` learns from them."""
    from srpl_cli.pool import add_to_pool, load_pool

    ws = workspace or Workspace()
    results, identifier, res = _identify(
        clips, ws, model_name, top_k, backbone_source, threshold, progress, min_speech_s
    )
    bb = identifier.backbone
    if res is None or not len(res.paths_ok):
        return results, 0, len(load_pool(ws, bb.name, bb.identifier))
    pool, added = add_to_pool(
        ws, bb.name, bb.identifier, res.embeddings, res.paths_ok, res.hashes, "identify --learn"
    )
    return results, added, len(pool)


def _identify(
    clips: Sequence[str | Path],
    workspace: Workspace | None,
    model_name: str,
    top_k: int,
    backbone_source: str | Path | None,
    threshold: float | None,
    progress: Progress,
    min_speech_s: float,
) -> tuple[list[Identification], Identifier, Any]:
    """(answers, the loaded Identifier, the ExtractionResult or None when no file was found)."""
    from srpl_cli.datasets import collect_audio
    from srpl_cli.embeddings import EmbeddingCache

    if threshold is not None and not math.isfinite(threshold):
        raise UsageError(f"--threshold must be a finite number, not {threshold}")
    _check_min_speech(min_speech_s)
    ws = workspace or Workspace()
    identifier = Identifier.load(ws, model_name, backbone_source=backbone_source)
    empty_dirs: list[tuple[Path, str]] = []
    paths = collect_audio(list(clips), empty_dirs)
    results: list[Identification] = []
    res = None
    if paths:
        cache = EmbeddingCache(ws.ensure().cache_dir)
        res = identifier.embed_files(paths, cache, progress, min_speech_s)
        results = identifier.answer(paths, res, top_k, threshold)
    failed = [Identification(str(p), None, None, {}, [], error=reason) for p, reason in empty_dirs]
    return results + failed, identifier, res


# ---------------------------------------------------------------- synthesize
def synthesize(
    source: str | Path | dict[str, list[Path]],
    out_dir: str | Path,
    engine: str = "perturb",
    variants: int = 0,
    unknown_speakers: int = 20,
    shots: int | None = None,
    unknown_dir: str | Path | None = None,
    keep_known: int = 3,
    keep_unknown: int = 12,
    max_similarity: float = 0.3,
    select: bool = False,
    tts_model: str | Path | None = None,
    sentences: str | Path | None = None,
    seed: int = 0,
    backbone: str = DEFAULT_BACKBONE,
    backbone_source: str | Path | None = None,
    progress: Progress = None,
    _backbone: Any = None,
) -> Any:
    """Speaker variants and unknown voices from ``source`` (a folder, manifest, or speaker -> clips)
    into ``out_dir`` (see srpl_cli.synthesis.run)."""
    from srpl_cli.datasets import read_speaker_folders
    from srpl_cli.synthesis.run import synthesize as run_synthesis
    from srpl_cli.synthesis.select import SelectionParams

    if shots is not None and shots < 1:
        raise UsageError("--shots must be at least 1")
    speakers = dict(source) if isinstance(source, dict) else read_speaker_folders(source)
    if shots is not None:
        speakers = {s: clips[:shots] for s, clips in speakers.items()}
    params = SelectionParams(keep_known, max_similarity, keep_unknown) if select else None
    bb = (_backbone or load_backbone(backbone, backbone_source)) if select else None
    tts_engine = None
    lines = None
    if engine == "tts":
        from srpl_cli.synthesis.tts import SpeechT5Engine, load_sentences

        tts_engine = SpeechT5Engine.load(tts_model)
        lines = load_sentences(sentences)
    elif tts_model is not None or sentences is not None:
        raise UsageError("--tts-model and --sentences only apply to --engine tts")
    return run_synthesis(
        speakers,
        out_dir,
        engine=engine,
        variants=variants,
        unknown_speakers=unknown_speakers,
        seed=seed,
        backbone=bb,
        select=params,
        unknown_dir=unknown_dir,
        progress=progress,
        tts_engine=tts_engine,
        sentences=lines,
    )
