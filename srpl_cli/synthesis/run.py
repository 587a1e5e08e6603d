"""Orchestration behind ``srpl synthesize``: make candidates, select them, write a self-describing folder.

Layout of the output (16 kHz mono FLAC)::

    DIR/known/<speaker>/<speaker>-v0001.flac     variants of enrolled speakers
    DIR/unknown/<id>/<id>-0001.flac              pseudo-unknown voices (synthetic or from --unknown-dir)
    DIR/manifest.json                            engine, seed, parameters, and per file: source clip,
                                                 transform / conditioning, selection score, kept or not

The folder is built beside DIR and renamed into place, so an interrupted run leaves no half output;
a non-empty DIR is only replaced when it is a previous synthesis output (its manifest says so).
Everything derives from ``seed``: the same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.errors import AudioError, DataError, UsageError
from srpl_cli.synthesis.perturb import IDENTITY_FAMILIES, VARIATION_PRESETS, Transform, identity_transform
from srpl_cli.synthesis.perturb import variation_transform as _variation
from srpl_cli.synthesis.select import SelectionParams, SelectionResult
from srpl_cli.synthesis.select import select as _select_policy

MANIFEST = "manifest.json"
FORMAT = "srpl-synthesis"
FORMAT_VERSION = 1
ENGINES = ("perturb", "tts")
SR = 16000
#: clips per pseudo-unknown speaker (perturb: at most this many of its source speaker's clips)
CLIPS_PER_UNKNOWN = 5

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


@dataclass
class SynthesisReport:
    """What ``synthesize`` wrote: counts per role, and where."""

    out_dir: Path
    engine: str
    seed: int
    known_kept: int = 0
    known_dropped: int = 0
    unknown_kept: int = 0
    unknown_dropped: int = 0
    real_unknown: int = 0
    selection: dict[str, Any] | None = None
    speakers: dict[str, int] = field(default_factory=dict)
    #: source clips (enrollment or --unknown-dir) skipped: unreadable or silent
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


@dataclass
class Candidate:
    """One synthetic (or real unknown) clip before writing: ``role`` is "known" or "unknown"."""

    role: str  # "known" | "unknown"
    speaker: str  # enrolled speaker (known) or unknown id
    wave: np.ndarray
    info: dict[str, Any]
    score: float | None = None
    kept: bool = True
    path: str | None = None


def _check_out_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: exists and is not a directory; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not _is_synthesis_dir(out_dir):
        raise UsageError(
            f"{out_dir}: directory is not empty and is not a previous `srpl synthesize` output; "
            "choose an empty or new --out directory"
        )


def _is_synthesis_dir(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _load_audible(path: Path) -> np.ndarray:
    """A source clip, refused (``AudioError``) when unreadable or silent (peak below -55 dBFS)."""
    from srpl_cli.audio import SILENT_PEAK, load_audio

    wave = load_audio(path, SR)
    if float(np.max(np.abs(wave))) < SILENT_PEAK:
        raise AudioError(path, "silent: no audible sound")
    return wave


def _clip_seed(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def perturb_candidates(
    waves: dict[str, list[np.ndarray]],
    variants: int,
    unknowns: int,
    seed: int,
    sources: dict[str, list[Path]] | None = None,
    tick: Callable[[], None] | None = None,
) -> list[Candidate]:
    """In-memory perturb-engine output: what ``synthesize`` writes, without touching the disk.

    ``waves``: speaker -> 16 kHz clips. Variant ``v`` of a speaker applies preset ``v`` mod 6 to
    clip ``v`` mod n; unknown ``j`` applies one identity transform (source speaker ``j`` mod K,
    family ``j`` div K mod 4) to up to ``CLIPS_PER_UNKNOWN`` clips of its source speaker. Useful
    for generating in-domain pseudo-unknowns inside ``tune`` without an output folder.
    """
    tick = tick or (lambda: None)
    speakers = sorted(waves)
    presets = list(VARIATION_PRESETS)
    out: list[Candidate] = []
    for si, spk in enumerate(speakers):
        for v in range(variants):
            rng = _clip_seed(seed, 1, si, v)
            ci = v % len(waves[spk])
            t = _variation(presets[v % len(presets)], rng)
            info = {"source": _src(sources, spk, ci), "transform": t.to_dict()}
            out.append(Candidate("known", spk, t.apply(waves[spk][ci], SR), info))
            tick()
    for j in range(unknowns):
        spk = speakers[j % len(speakers)]
        family = IDENTITY_FAMILIES[(j // len(speakers)) % len(IDENTITY_FAMILIES)]
        t = identity_transform(family, _clip_seed(seed, 2, j))
        uid = f"pseudo-{j + 1:03d}"
        for ci, wave in enumerate(waves[spk][:CLIPS_PER_UNKNOWN]):
            info = {"source": _src(sources, spk, ci), "source_speaker": spk, "transform": t.to_dict()}
            out.append(Candidate("unknown", uid, t.apply(wave, SR), info))
            tick()
    return out


def _src(sources: dict[str, list[Path]] | None, speaker: str, index: int) -> str:
    return str(sources[speaker][index]) if sources else f"{speaker}[{index}]"


def _tts_candidates(
    waves: dict[str, list[np.ndarray]],
    variants: int,
    unknowns: int,
    seed: int,
    engine: Any,
    sentences: Sequence[str],
    tick: Callable[[], None],
) -> list[Candidate]:
    from srpl_cli.synthesis.perturb import limit_peak
    from srpl_cli.synthesis.tts import UNKNOWN_KINDS, unknown_embedding

    speakers = sorted(waves)
    embs = {s: engine.speaker_embedding(waves[s]) for s in speakers}
    out: list[Candidate] = []
    for si, spk in enumerate(speakers):
        for v in range(variants):
            text = sentences[(si * variants + v) % len(sentences)]
            clip_seed = int(_clip_seed(seed, 3, si, v).integers(0, 2**31 - 1))
            wave = limit_peak(engine.synthesize(text, embs[spk], seed=clip_seed))
            info = {"text": text, "conditioning": {"kind": "speaker", "speaker": spk}, "tts_seed": clip_seed}
            out.append(Candidate("known", spk, wave, info))
            tick()
    known = np.stack([embs[s] for s in speakers])
    for j in range(unknowns):
        rng = _clip_seed(seed, 4, j)
        emb, cond = unknown_embedding(UNKNOWN_KINDS[j % len(UNKNOWN_KINDS)], known, rng)
        if "between" in cond:
            cond["between"] = [speakers[i] for i in cond["between"]]
        if "weights" in cond:
            cond["weights"] = dict(zip(speakers, cond["weights"], strict=True))
        uid = f"pseudo-{j + 1:03d}"
        for c in range(CLIPS_PER_UNKNOWN):
            text = sentences[(j * CLIPS_PER_UNKNOWN + c) % len(sentences)]
            clip_seed = int(rng.integers(0, 2**31 - 1))
            wave = limit_peak(engine.synthesize(text, emb, seed=clip_seed))
            out.append(
                Candidate("unknown", uid, wave, {"text": text, "conditioning": cond, "tts_seed": clip_seed})
            )
            tick()
    return out


def _real_unknowns(unknown_dir: Path) -> list[tuple[str, Path]]:
    """``unknown_dir/<id>/<clips>`` (one id per sub-folder) and loose files (one id per file)."""
    from srpl_cli.datasets import is_audio_file

    if not unknown_dir.is_dir():
        raise DataError(f"{unknown_dir}: --unknown-dir is not a directory")
    out: list[tuple[str, Path]] = []
    taken: set[str] = set()

    def new_id(name: str) -> str:
        # `a/`, `a.wav` and `a.flac` are different people: never merge them under one id
        ident, n = f"real-{name}", 2
        while ident in taken:
            ident, n = f"real-{name}-{n}", n + 1
        taken.add(ident)
        return ident

    for p in sorted(unknown_dir.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            clips = [f for f in sorted(p.rglob("*")) if is_audio_file(f)]
            if clips:
                ident = new_id(p.name)
                out += [(ident, f) for f in clips]
        elif is_audio_file(p):
            out.append((new_id(p.stem), p))
    if not out:
        raise DataError(f"{unknown_dir}: no audio files found for --unknown-dir")
    return out


def _embed(backbone: Any, waves: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
    parts = [
        np.asarray(backbone.embed(list(waves[i : i + batch])), np.float32)
        for i in range(0, len(waves), batch)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def _apply_selection(
    cands: list[Candidate],
    waves: dict[str, list[np.ndarray]],
    backbone: Any,
    params: SelectionParams,
) -> SelectionResult:
    speakers = sorted(waves)
    enroll_w = [w for s in speakers for w in waves[s]]
    enroll_y = [s for s in speakers for _ in waves[s]]
    kn = [c for c in cands if c.role == "known"]
    un = [c for c in cands if c.role == "unknown"]
    emb = _embed(backbone, enroll_w + [c.wave for c in kn] + [c.wave for c in un])
    e, k, u = np.split(emb, [len(enroll_w), len(enroll_w) + len(kn)])
    res = _select_policy(e, enroll_y, k, [c.speaker for c in kn], u, params)
    for i, c in enumerate(kn):
        c.score = res.known_scores[i]
        c.kept = i in set(res.known_kept)
    kept_u = set(res.unknown_kept)
    for i, c in enumerate(un):
        c.score = res.unknown_scores[i]
        c.kept = i in kept_u
    return res


def synthesize(
    enroll: dict[str, list[Path]],
    out_dir: str | Path,
    engine: str = "perturb",
    variants: int = 0,
    unknown_speakers: int = 20,
    seed: int = 0,
    backbone: Any = None,
    select: SelectionParams | None = None,
    unknown_dir: str | Path | None = None,
    progress: Progress | None = None,
    *,
    tts_engine: Any = None,
    sentences: Sequence[str] | None = None,
) -> SynthesisReport:
    """Make variants of each enrolled speaker and pseudo-unknown voices; write them with a manifest.

    enroll : speaker -> clip paths. ``variants`` per speaker, ``unknown_speakers`` pseudo-unknown voices
    (each ``CLIPS_PER_UNKNOWN`` clips). ``backbone`` (a loaded ``Backbone``) with ``select`` applies the
    selection policy; dropped candidates are listed in the manifest but not written. ``tts_engine`` is a
    loaded ``SpeechT5Engine`` (loaded from the hub when ``None`` and ``engine="tts"``).
    """
    out_dir = Path(out_dir)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    if variants < 0 or unknown_speakers < 0:
        raise UsageError("--variants and --unknown-speakers must be >= 0")
    if not enroll or any(not clips for clips in enroll.values()):
        raise DataError("synthesis needs at least one enrolled speaker with at least one clip")
    if select is not None and backbone is None:
        raise UsageError("the selection policy needs a backbone to embed the candidates")
    _check_out_dir(out_dir)

    speakers = sorted(enroll)
    sources = {s: [Path(p) for p in enroll[s]] for s in speakers}
    report_skipped: list[str] = []
    real_list = _real_unknowns(Path(unknown_dir)) if unknown_dir is not None else []
    n_clips = sum(len(v) for v in sources.values())
    n_unknown_clips = (
        sum(
            min(CLIPS_PER_UNKNOWN, len(sources[speakers[j % len(speakers)]])) for j in range(unknown_speakers)
        )
        if engine == "perturb"
        else unknown_speakers * CLIPS_PER_UNKNOWN
    )
    # progress: load clips, make candidates, (embed + select), load real unknowns, write
    n_steps = n_clips + len(speakers) * variants + n_unknown_clips + (select is not None) + len(real_list) + 1
    step = 0

    def tick() -> None:
        nonlocal step
        step += 1
        if progress:
            progress(min(step, n_steps), n_steps)

    # as in `tune`: a clip that cannot be read, or is silent (it would only give silent variants), is
    # skipped with a warning, not a reason to stop the whole run
    waves: dict[str, list[np.ndarray]] = {}
    for s in list(speakers):
        waves[s], usable = [], []
        for p in sources[s]:
            try:
                waves[s].append(_load_audible(p))
                usable.append(p)
            except AudioError as exc:
                log.warning("skipped %s", exc)
                report_skipped.append(str(p))
            tick()
        sources[s] = usable
        if not usable:
            log.warning("speaker '%s' has no usable clip: no variants or pseudo-unknowns made from it", s)
            speakers.remove(s)
            del waves[s], sources[s]
    if not speakers:
        raise DataError("synthesis needs at least one enrolled speaker with a usable clip (all were skipped)")

    if engine == "perturb":
        cands = perturb_candidates(waves, variants, unknown_speakers, seed, sources, tick)
    else:
        if tts_engine is None:
            from srpl_cli.synthesis.tts import SpeechT5Engine

            tts_engine = SpeechT5Engine.load()
        if sentences is None:
            from srpl_cli.synthesis.tts import builtin_sentences

            sentences = builtin_sentences()
        cands = _tts_candidates(waves, variants, unknown_speakers, seed, tts_engine, list(sentences), tick)

    res = None
    if select is not None:
        res = _apply_selection(cands, waves, backbone, select)
        tick()

    from srpl_cli.synthesis.perturb import limit_peak

    real: list[Candidate] = []
    for uid, p in real_list:
        # float files (and resampling overshoot) can exceed full scale: scale down rather than let the
        # 16-bit writer clip; clips within full scale are copied unchanged
        try:
            wave = _load_audible(p)
        except AudioError as exc:
            log.warning("skipped %s", exc)
            report_skipped.append(str(p))
            tick()
            continue
        real.append(Candidate("unknown", uid, limit_peak(wave, 1.0), {"source": str(p), "real": True}))
        tick()

    report = SynthesisReport(out_dir, engine, seed, skipped=report_skipped)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        _write(tmp, cands + real, report)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "engine": engine,
            "seed": seed,
            "sample_rate": SR,
            "variants": variants,
            "unknown_speakers": unknown_speakers,
            "backbone": getattr(backbone, "identifier", None) if backbone is not None else None,
            "selection": None if res is None else {"params": select.to_dict(), **res.to_dict()},
            "enrollment": {s: [str(p) for p in sources[s]] for s in speakers},
            "files": [_entry(c) for c in cands + real],
        }
        from srpl_cli._io import atomic_write_text

        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tick()
    report.selection = manifest["selection"]
    return report


def _entry(c: Candidate) -> dict[str, Any]:
    return {
        "path": c.path,
        "role": c.role,
        "speaker": c.speaker,
        **c.info,
        "selection_score": None if c.score is None else round(float(c.score), 6),
        "kept": c.kept,
    }


def _write(root: Path, cands: list[Candidate], report: SynthesisReport) -> None:
    from srpl_cli.audio import save_audio

    counters: dict[tuple[str, str], int] = {}
    for c in cands:
        key = (c.role, c.speaker)
        counters[key] = counters.get(key, 0) + 1
        real = bool(c.info.get("real"))
        if c.role == "known":
            report.known_kept += c.kept
            report.known_dropped += not c.kept
        elif real:
            report.real_unknown += 1
        else:
            report.unknown_kept += c.kept
            report.unknown_dropped += not c.kept
        if not c.kept:
            continue
        tag = "v" if c.role == "known" else ""
        rel = Path(c.role) / c.speaker / f"{c.speaker}-{tag}{counters[key]:04d}.flac"
        save_audio(root / rel, c.wave, SR)
        c.path = rel.as_posix()
        report.speakers[f"{c.role}/{c.speaker}"] = report.speakers.get(f"{c.role}/{c.speaker}", 0) + 1


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder onto ``out_dir``; an old synthesis output is moved aside first."""
    old = None
    if out_dir.exists():
        if any(out_dir.iterdir()):
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        else:
            out_dir.rmdir()
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: not an `srpl synthesize` output (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path / MANIFEST}: unreadable synthesis manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path / MANIFEST}: not an `srpl synthesize` manifest")
    return manifest


def _kept_files(path: Path, manifest: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in manifest.get("files", []):
        if not f.get("kept") or not f.get("path"):
            continue
        p = path / f["path"]
        if not p.is_file():
            raise DataError(f"{p}: listed in the synthesis manifest but missing; re-run `srpl synthesize`")
        out.append((p, f))
    return out


def read_synthetic(path: str | Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Read a synthesis folder -> (known variants per speaker, unknown clips), as written files only."""
    path = Path(path)
    known: dict[str, list[Path]] = {}
    unknown: list[Path] = []
    for p, f in _kept_files(path, _read_manifest(path)):
        if f["role"] == "known":
            known.setdefault(f["speaker"], []).append(p)
        else:
            unknown.append(p)
    return known, unknown


def variant_sources(path: str | Path) -> dict[str, str]:
    """Written variant file -> the enrollment clip it was made from, as recorded (perturb engine).

    TTS variants are made from a speaker's voice, not from one clip, and are absent.
    """
    path = Path(path)
    return {
        str(p): str(f["source"])
        for p, f in _kept_files(path, _read_manifest(path))
        if f["role"] == "known" and f.get("source")
    }


def transform_of(entry: dict[str, Any]) -> Transform | None:
    """The ``Transform`` recorded for one manifest file entry (perturb engine), to regenerate it."""
    t = entry.get("transform")
    return Transform.from_dict(t) if t else None
