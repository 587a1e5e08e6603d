"""Speakers and models of a workspace: list, add, remove, rename a person; list, show, use, remove a
model version (`srpl speakers ...`, `srpl models ...`).

A change of people refits the model in use from what the workspace already holds: the stored speaker
profiles (their enrollment embeddings) and the embedding cache (unknown and synthetic samples named in
tune.json), with the method, hyper-parameters, seed and threshold rule the model was tuned with. Only a
newly added person's clips are embedded. The result is a new model version, committed like `srpl tune`
does (built under tmp/, renamed in, CURRENT moved last, all under the workspace lock), so a failed or
killed change leaves the previous version in use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._version import __version__
from srpl_cli.errors import DataError, StateError, UsageError
from srpl_cli.workspace import DEFAULT_MODEL, ModelVersion, Workspace, check_name

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None] | None


# ---------------------------------------------------------------- results
@dataclass
class SpeakerEntry:
    name: str
    clips: int
    profile: bool
    enrolled: str | None = None


@dataclass
class SpeakerList:
    model: str
    version: str
    backbone: str
    speakers: list[SpeakerEntry]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SpeakerChange:
    """What `speakers add/remove/rename` did: the new model version and who it knows."""

    action: str
    speaker: str
    model: str
    previous_version: str
    version: str
    method: str
    backbone: str
    speakers: list[str]
    threshold: float
    calibration: dict[str, Any]
    n_unknown: int
    new_name: str | None = None
    clips_used: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VersionEntry:
    version: str
    current: bool
    created: str | None
    method: str | None
    backbone: str | None
    speakers: list[str]
    threshold: float | None
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelEntry:
    name: str
    current: str | None
    versions: list[VersionEntry]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelDetails:
    name: str
    version: str
    current: bool
    path: str
    backend: str
    params: dict[str, Any]
    threshold: float
    tune: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- reading
def _current(workspace: Workspace, model_name: str, version: str | None = None) -> ModelVersion:
    from srpl_cli.identifier import current_model

    return current_model(workspace, model_name, version)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise StateError(f"{path} is missing or unreadable; tune again") from None
    if not isinstance(data, dict):
        raise StateError(f"{path} is not a JSON object; tune again")
    return data


def _model_state(mv: ModelVersion) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta.json, tune.json) of a model version."""
    tune = _read_json(mv.path / "tune.json")
    if not isinstance(tune.get("backbone"), str) or not isinstance(tune.get("method"), str):
        raise StateError(f"model {mv.path}: tune.json does not name the backbone and method; tune again")
    return _read_json(mv.path / "meta.json"), tune


def list_speakers(workspace: Workspace, model_name: str = DEFAULT_MODEL) -> SpeakerList:
    """The people the model in use knows, with their clip count and whether a profile is stored."""
    mv = _current(workspace, model_name)
    meta, tune = _model_state(mv)
    profiles = workspace.load_profiles(tune["backbone"])
    clips = tune.get("clips") or {}
    rows = []
    for s in [str(c) for c in meta.get("classes", [])]:
        prof = profiles.get(s)
        n = len(prof[0]) if prof is not None else len(clips.get(s, []))
        rows.append(SpeakerEntry(s, n, prof is not None, prof[1].get("updated") if prof else None))
    return SpeakerList(model_name, mv.version, tune["backbone"], rows)


def _dir_size(path: Path) -> int:
    total = 0
    for f in path.rglob("*"):
        try:
            if f.is_file() and not f.is_symlink():
                total += f.stat().st_size
        except OSError:  # removed while we looked
            continue
    return total


def model_names(workspace: Workspace) -> list[str]:
    if not workspace.models_dir.is_dir():
        return []
    return sorted(d.name for d in workspace.models_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _current_version(workspace: Workspace, name: str) -> str | None:
    try:
        return (workspace.models_dir / name / "CURRENT").read_text().strip()
    except OSError:
        return None


def list_models(workspace: Workspace) -> list[ModelEntry]:
    """Every model name with its versions (oldest first), which one is in use, and what each holds."""
    out = []
    for name in model_names(workspace):
        current = _current_version(workspace, name)
        versions = []
        for v in workspace.model_versions(name):
            path = workspace.models_dir / name / v
            try:
                meta = json.loads((path / "meta.json").read_text())
                tune = json.loads((path / "tune.json").read_text())
            except (OSError, ValueError):  # an incomplete version (hand-copied): listed, not described
                meta, tune = {}, {}
            created = None
            try:
                created = datetime.fromtimestamp(
                    (path / "meta.json").stat().st_mtime, timezone.utc
                ).isoformat(timespec="seconds")
            except OSError:
                pass
            versions.append(
                VersionEntry(
                    v,
                    v == current,
                    created,
                    tune.get("method") or meta.get("backend"),
                    tune.get("backbone"),
                    [str(c) for c in meta.get("classes", [])],
                    float(meta["threshold"]) if "threshold" in meta else None,
                    _dir_size(path),
                )
            )
        out.append(ModelEntry(name, current, versions))
    return out


def show_model(
    workspace: Workspace, model_name: str = DEFAULT_MODEL, version: str | None = None
) -> ModelDetails:
    """Everything about one version (default: the one in use): backend, parameters, threshold, tune.json."""
    mv = _current(workspace, model_name, version)
    meta, tune = _model_state(mv)
    return ModelDetails(
        model_name,
        mv.version,
        mv.version == _current_version(workspace, model_name),
        str(mv.path),
        str(meta.get("backend")),
        dict(meta.get("params") or {}),
        float(meta.get("threshold", float("nan"))),
        tune,
    )


# ---------------------------------------------------------------- model versions
def use_model(workspace: Workspace, version: str, model_name: str = DEFAULT_MODEL) -> ModelVersion:
    """Make an existing version the one in use (roll back or forward)."""
    with workspace.lock():
        return workspace.set_current(model_name, version)


def remove_model_version(workspace: Workspace, version: str, model_name: str = DEFAULT_MODEL) -> ModelVersion:
    """Delete one version that is not in use. It is moved into tmp/ first (one atomic rename), so a kill
    mid-delete never leaves a half version under models/."""
    with workspace.lock():
        mv = _current(workspace, model_name, version)
        if version == _current_version(workspace, model_name):
            others = [v for v in workspace.model_versions(model_name) if v != version]
            hint = (
                f"run: srpl models use {others[-1]} --model {model_name}, then remove it" if others else None
            )
            raise StateError(f"model '{model_name}' {version} is in use; it cannot be removed", hint=hint)
        _discard(workspace, mv.path)
        return mv


def _discard(workspace: Workspace, path: Path) -> None:
    """Remove a directory atomically from the reader's view: rename into tmp/, then delete."""
    workspace.tmp_dir.mkdir(parents=True, exist_ok=True)
    trash = workspace.tmp_dir / f"{os.getpid()}-trash-{uuid.uuid4().hex[:8]}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------- speakers
def add_speaker(
    workspace: Workspace,
    name: str,
    clips: Sequence[str | Path],
    model_name: str = DEFAULT_MODEL,
    shots: int | None = None,
    backbone_source: str | Path | None = None,
    progress: Progress = None,
    min_speech_s: float = 0.5,
    _backbone: Any = None,
) -> SpeakerChange:
    """Enroll ``name`` from ``clips`` (files or folders) with the backbone of the model in use, store
    their profile and refit that model with them as a new version.

    ``shots``: use the first N usable clips (by name); default: as many as the model was tuned with
    (all of them when it was tuned without ``--shots``). Adding a name the model already knows
    replaces that person's enrollment.
    """
    from srpl_cli import pipeline
    from srpl_cli.datasets import collect_audio
    from srpl_cli.model_backbone import load_model_backbone

    check_name(name, "speaker name")
    if shots is not None and shots < 1:
        raise UsageError("--shots must be at least 1")
    mv = _current(workspace, model_name)
    _, tune = _model_state(mv)
    shots = shots if shots is not None else tune.get("shots")
    paths = sorted(collect_audio(list(clips)), key=lambda p: str(p))
    bb = load_model_backbone(tune, f"model '{model_name}'", backbone_source, strict=True, loaded=_backbone)
    X_by, used, report = pipeline._embed_speakers({name: paths}, bb, workspace, shots, progress, min_speech_s)
    if name not in X_by:
        first = f": {report.problems[0].path}: {report.problems[0].reason}" if report.problems else ""
        raise DataError(f"no usable clip for '{name}' ({len(report.problems)} problem(s){first})")
    with workspace.lock():
        mv, meta, tune = _locked_state(workspace, model_name)
        info = {
            "clips": [str(p) for p in used[name]],
            "backbone_id": bb.identifier,
            "source": "srpl speakers add",
            "srpl_version": __version__,
        }
        speakers = sorted({*map(str, meta.get("classes", [])), name})
        change = _refit(
            workspace,
            model_name,
            mv,
            meta,
            tune,
            speakers,
            action="add",
            speaker=name,
            pending={name: (X_by[name], info)},
        )
        workspace.save_profile(tune["backbone"], name, X_by[name], info)
    change.clips_used = len(used[name])
    change.problems = [{"path": p.path, "reason": p.reason} for p in report.problems]
    return change


def remove_speaker(workspace: Workspace, name: str, model_name: str = DEFAULT_MODEL) -> SpeakerChange:
    """Refit the model in use without ``name`` (a new version), then delete their stored profile unless
    another model's version in use still needs it. Older versions keep what they were fitted on."""
    with workspace.lock():
        mv, meta, tune = _locked_state(workspace, model_name)
        classes = [str(c) for c in meta.get("classes", [])]
        if name not in classes:
            raise StateError(
                f"model '{model_name}' {mv.version} has no speaker '{name}' (it knows: {', '.join(classes)})"
            )
        speakers = [s for s in classes if s != name]
        if len(speakers) < 2:
            raise DataError(
                f"removing '{name}' would leave {len(speakers)} speaker(s); a model needs at least 2",
                hint="add someone first: srpl speakers add NAME CLIPS...",
            )
        change = _refit(workspace, model_name, mv, meta, tune, speakers, action="remove", speaker=name)
        # last: a kill before this point leaves an unused profile, never a model without its data
        _forget_profile(workspace, tune["backbone"], name)
    return change


def rename_speaker(
    workspace: Workspace, old: str, new: str, model_name: str = DEFAULT_MODEL
) -> SpeakerChange:
    """Give a person of the model in use another name: their profile is stored under the new name and
    the model refitted (same data, new label) as a new version."""
    check_name(new, "speaker name")
    with workspace.lock():
        mv, meta, tune = _locked_state(workspace, model_name)
        classes = [str(c) for c in meta.get("classes", [])]
        if old not in classes:
            raise StateError(
                f"model '{model_name}' {mv.version} has no speaker '{old}' (it knows: {', '.join(classes)})"
            )
        if new in classes:
            raise UsageError(f"model '{model_name}' already has a speaker '{new}'")
        backbone = tune["backbone"]
        profiles = workspace.load_profiles(backbone)
        if old not in profiles:
            raise StateError(_missing_profile(old, backbone))
        X, info = profiles[old]
        info = {k: v for k, v in info.items() if k not in ("speaker", "backbone", "updated")}
        info = {**info, "renamed_from": old}
        speakers = sorted(new if s == old else s for s in classes)
        change = _refit(
            workspace,
            model_name,
            mv,
            meta,
            tune,
            speakers,
            action="rename",
            speaker=old,
            rename=(old, new),
            pending={new: (X, info)},
        )
        workspace.save_profile(backbone, new, X, info)
        _forget_profile(workspace, backbone, old)
    change.new_name = new
    return change


def _locked_state(workspace: Workspace, model_name: str) -> tuple[ModelVersion, dict, dict]:
    """Read the version in use again under the lock: a tune that finished meanwhile is not lost."""
    mv = _current(workspace, model_name)
    meta, tune = _model_state(mv)
    return mv, meta, tune


def _missing_profile(name: str, backbone: str) -> str:
    return (
        f"no stored {backbone} profile for '{name}' (removed, or enrolled with another backbone); "
        f"add them again (srpl speakers add {name} CLIPS...) or remove them (srpl speakers remove {name})"
    )


def _forget_profile(workspace: Workspace, backbone: str, name: str) -> None:
    """Delete a profile no current model version uses any more."""
    for other in model_names(workspace):
        try:
            mv = _current(workspace, other)
            meta, tune = _model_state(mv)
        except (StateError, DataError):
            continue
        if tune.get("backbone") == backbone and name in map(str, meta.get("classes", [])):
            log.info("keeping profile of %s: model '%s' still uses it", name, other)
            return
    target = workspace.profiles_dir / backbone / name
    if target.is_dir():
        _discard(workspace, target)


def _cached_rows(
    workspace: Workspace, paths: Sequence[Path], backbone_id: str
) -> tuple[np.ndarray, list[Path]]:
    """Embeddings of ``paths`` from the cache only (files are hashed, nothing is embedded)."""
    from srpl_cli.embeddings import EmbeddingCache, file_sha256

    cache = EmbeddingCache(workspace.cache_dir)
    rows, found = [], []
    for p in paths:
        try:
            hit = cache.get(file_sha256(p), backbone_id)
        except OSError:
            hit = None
        if hit is not None:
            rows.append(hit[0])
            found.append(Path(p))
    dim = len(rows[0]) if rows else 0
    return (np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)), found


def _refit(
    workspace: Workspace,
    model_name: str,
    mv: ModelVersion,
    meta: dict[str, Any],
    tune: dict[str, Any],
    speakers: list[str],
    action: str,
    speaker: str,
    rename: tuple[str, str] | None = None,
    pending: dict[str, tuple[np.ndarray, dict[str, Any]]] | None = None,
) -> SpeakerChange:
    """Fit the model's method on ``speakers``' stored profiles (+ the cached unknown / synthetic samples
    it was tuned with), calibrate with its rule, and commit a new version. Call under the lock.
    ``pending``: profiles to fit with that the caller stores only once the new version is committed, so a
    refit that fails leaves every stored profile as it was."""
    from srpl_cli.calibration import fit_backend
    from srpl_cli.model_backbone import mismatch

    backbone, backbone_id = tune["backbone"], tune.get("backbone_id")
    profiles = {**workspace.load_profiles(backbone), **(pending or {})}
    X_by: dict[str, np.ndarray] = {}
    clips: dict[str, list[str]] = {}
    for s in speakers:
        if s not in profiles:
            raise StateError(_missing_profile(s, backbone))
        X, info = profiles[s]
        if info.get("backbone_id") and mismatch(backbone_id, info["backbone_id"], "it") is not None:
            raise StateError(
                f"the stored profile of '{s}' was enrolled with other {backbone} weights than model "
                f"'{model_name}' {mv.version}",
                hint="tune again on a folder with everyone, or add them again: srpl speakers add "
                f"{s} CLIPS...",
            )
        X_by[s] = X
        clips[s] = [str(c) for c in info.get("clips", [])]
    X = np.concatenate([X_by[s] for s in speakers]).astype(np.float32)
    y = np.concatenate([[s] * len(X_by[s]) for s in speakers])
    sources = dict(tune.get("unknown_sources") or {})
    unknown_parts: list[np.ndarray] = []
    origin = None
    renamed = dict([rename]) if rename else {}
    if "synthetic" in sources and backbone_id:
        from srpl_cli import pipeline
        from srpl_cli.synthesis.run import read_synthetic, variant_sources

        syn_dir = Path(sources["synthetic"]["dir"])
        if not syn_dir.is_dir():
            raise DataError(f"{syn_dir} (the --synthetic folder model '{model_name}' was tuned with) is gone")
        known_syn, unknown_syn = read_synthetic(syn_dir)
        inverse = {v: k for k, v in renamed.items()}
        spk_paths = {s: known_syn.get(inverse.get(s, s), []) for s in speakers}
        Xv, found = _cached_rows(workspace, [p for s in speakers for p in spk_paths[s]], backbone_id)
        if len(found):
            spk_of = {str(p): s for s in speakers for p in spk_paths[s]}
            source_row = pipeline._source_rows(
                variant_sources(syn_dir),
                [[Path(c) for c in clips[s]] for s in speakers],
                {str(p): speakers.index(spk_of[str(p)]) for p in found},
            )
            origin = np.concatenate([np.arange(len(X)), [source_row.get(str(p), -1) for p in found]])
            X = np.concatenate([X, Xv])
            y = np.concatenate([y, [spk_of[str(p)] for p in found]])
        Xu, _ = _cached_rows(workspace, unknown_syn, backbone_id)
        if len(Xu):
            unknown_parts.append(Xu)
    if "unknown_dir" in sources and backbone_id:
        from srpl_cli.datasets import collect_audio

        udir = Path(sources["unknown_dir"]["dir"])
        Xu, _ = _cached_rows(workspace, collect_audio([udir]) if udir.is_dir() else [], backbone_id)
        if not len(Xu):
            raise DataError(
                f"no cached embedding of the unknown clips in {udir} (the --unknown-dir model "
                f"'{model_name}' was tuned with)",
                hint="tune again with --unknown-dir",
            )
        unknown_parts.append(Xu)
    X_unknown = np.concatenate(unknown_parts) if unknown_parts else None
    pool_X = None
    if "unlabeled_pool" in sources:  # tuned with a pool: refit with the stored pool, as `tune` would now
        from srpl_cli.pool import read_pool

        pool = read_pool(workspace, backbone, backbone_id)  # under the lock already
        if not len(pool):
            raise DataError(
                f"model '{model_name}' was tuned with an unlabeled pool, and the workspace holds none now",
                hint="tune again (with --unlabeled DIR, or --no-pool)",
            )
        pool_X = pool.X
        sources["unlabeled_pool"] = {**sources["unlabeled_pool"], "clips": len(pool), "added": 0}
    params = dict(meta.get("params") or {})
    calibration = tune.get("calibration") or {}
    seed = int(tune.get("seed", 0))
    model, cal = fit_backend(
        tune["method"],
        X,
        y,
        X_unknown,
        seed,
        calibration.get("target_far"),
        params=params,
        origin=origin,
        pool=pool_X,
    )
    new_tune = {
        **tune,
        "speakers": speakers,
        "clips": clips,
        "n_enroll": int(len(X)),
        "n_unknown": int(0 if X_unknown is None else len(X_unknown)),
        "unknown_sources": sources,
        "calibration": cal,
        "srpl_version": __version__,
        "refit": {
            "action": action,
            "speaker": speaker,
            "from_version": mv.version,
            **({"new_name": rename[1]} if rename else {}),
        },
    }
    new = workspace.save_model(model, new_tune, model_name, meta.get("metadata") or None)
    return SpeakerChange(
        action,
        speaker,
        model_name,
        mv.version,
        new.version,
        tune["method"],
        backbone,
        speakers,
        float(model.threshold_),
        cal,
        new_tune["n_unknown"],
        path=str(new.path),
    )
