"""`srpl evaluate`: open-set metrics of backends on embedding datasets or audio speaker folders.

Three protocols:
- a saved or released checkpoint scored on ``emb_test`` (no fitting);
- the authors' fixed split: fit on ``emb_train`` (or the first N files of each known speaker), test on
  ``emb_test``;
- ``--folds F``: F random few-shot splits, every method on the same folds, paired against cosine.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.calibration import fit_backend, route_pool
from srpl_cli.errors import DataError, UsageError
from srpl_cli.pipeline import DEFAULT_METHOD, DEFAULT_POOL_METHOD, Progress, embed_clips, load_backbone
from srpl_cli.protocols import (
    Augment,
    Fold,
    FoldsReport,
    MethodResult,
    evaluate_folds,
    few_shot_folds,
    first_n_split,
    score_method,
    split_pool,
)
from srpl_cli.workspace import Workspace

BASELINE = "cosine"


@dataclass
class SplitReport:
    """Metrics of each method on one fixed split."""

    methods: dict[str, MethodResult]
    protocol: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat metrics for one method (percent, like the paper); nested by method for several."""

        def pct(m: dict[str, float]) -> dict[str, float]:
            return {k: (v if k == "min_dcf" else 100.0 * v) for k, v in m.items()}

        if len(self.methods) == 1:
            ((name, res),) = self.methods.items()
            return {"method": name, **pct(res.metrics), "protocol": self.protocol}
        return {"methods": {n: pct(r.metrics) for n, r in self.methods.items()}, "protocol": self.protocol}


@dataclass
class EvalData:
    """Embeddings to evaluate on, with what the protocol needs to know about each row."""

    X: np.ndarray
    y: np.ndarray
    order: np.ndarray | None = None
    enroll_mask: np.ndarray | None = None
    never_known: np.ndarray | None = None
    X_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    X_unknown_train: np.ndarray | None = None
    description: dict[str, Any] = field(default_factory=dict)
    #: audio clip of each row (audio data only)
    paths: list[Path] | None = None
    #: per-fold extra training data (audio --cs-my); overrides X_unknown_train when set
    augment: Augment | None = None
    #: other people's embeddings for cohort backends (``--cohort``; AS-norm), never tested
    cohort: np.ndarray | None = None
    #: a fixed unlabeled pool (``--unlabeled DIR``), given to every method but the baseline
    pool: np.ndarray | None = None


def parse_methods(text: str | Sequence[str] | None, folds: bool, pool: bool = False) -> list[str]:
    """The methods to compare; by default cosine, tune's default and, with a pool, tune's pool default."""
    from srpl_cli.backends import backend_class

    if text is None:
        methods = [BASELINE, DEFAULT_METHOD] if folds else [DEFAULT_METHOD]
        if pool:
            methods.append(DEFAULT_POOL_METHOD)
    else:
        parts = text.split(",") if isinstance(text, str) else list(text)
        methods = [m.strip() for m in parts if m.strip()]
    for m in methods:
        backend_class(m)  # clear error for an unknown name
    if folds and BASELINE not in methods:
        methods.insert(0, BASELINE)  # paired differences need the baseline on the same folds
    return list(dict.fromkeys(methods))


def parse_known(text: str | None, counts: bool = True) -> tuple[int | None, list[int] | None]:
    """With folds (``counts``): '5' -> five known speakers drawn per fold. Otherwise, and for ranges
    or lists, speaker ids: '0-4' / '0,1,2' / '3' -> exactly those speakers."""
    from srpl_cli.datasets import parse_speaker_range

    if text is None:
        return None, None
    text = text.strip()
    if counts and text.isdigit():
        return int(text), None
    return None, parse_speaker_range(text)


def known_names(text: str, labels: np.ndarray) -> list[str]:
    """``--known`` as speaker folder names, for audio data (clips labelled by folder name).

    ``alice,bob`` names folders; a numeric id or range (``1688``, ``0-4``) also matches folders whose
    name is that number (``03`` matches 3). Names that match nothing are left for the protocol to report.
    """
    from srpl_cli.datasets import parse_speaker_range

    names = {str(v) for v in np.unique(labels)}
    by_number = {int(n): n for n in names if n.isdigit()}
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part in names or not part.replace("-", "").isdigit():
            out.append(part)
        else:
            out.extend(by_number.get(i, str(i)) for i in parse_speaker_range(part))
    if not out:
        raise DataError(f"invalid speaker list '{text}'")
    return sorted(set(out))


# ---------------------------------------------------------------- loading data
def load_embedding_data(root: Path, cs_my: bool) -> EvalData:
    from srpl_cli.datasets import read_embedding_dataset

    splits = read_embedding_dataset(root)
    test = splits.get("emb_test")
    train = splits.get("emb_train")
    if test is None:
        raise DataError(f"{root}: no emb_test/ split to evaluate on")
    data = EvalData(test.X, test.y, order=test.order, description={"data": str(root), "kind": "embeddings"})
    if train is not None:
        data.X_train, data.y_train = train.X, train.y
    if cs_my:
        control = splits.get("emb_train_unknown_control")
        if control is None:
            raise DataError(
                f"{root}: --cs-my needs an emb_train_unknown_control/ split (unknown training samples)"
            )
        data.X_unknown_train = control.X
    return data


def load_audio_data(
    root: Path,
    backbone: str,
    workspace: Workspace,
    backbone_source: Path | None,
    unknown_dir: Path | None,
    enroll_glob: str | None,
    progress: Progress,
) -> tuple[EvalData, Any]:
    """Embed every clip of ``root/<speaker>/`` (and of ``unknown_dir``) through the workspace cache."""
    from srpl_cli.datasets import collect_audio, read_speaker_folders

    speakers = read_speaker_folders(root, min_speakers=3)
    bb = load_backbone(backbone, backbone_source)
    paths = [p for clips in speakers.values() for p in clips]
    labels = [s for s, clips in speakers.items() for _ in clips]
    if unknown_dir is not None and not Path(unknown_dir).is_dir():  # a typo must not drop the unknown pool
        raise DataError(f"{unknown_dir}: no such directory (--unknown-dir)")
    extra = collect_audio([unknown_dir]) if unknown_dir is not None else []
    res = embed_clips(paths + extra, bb, workspace, progress)
    label_of = {str(p): s for p, s in zip(paths, labels, strict=True)}
    extra_set = {str(p) for p in extra}
    ok = [str(p) for p in res.paths_ok]
    y = np.array([label_of.get(p, f"__other__{i}") for i, p in enumerate(ok)], dtype=object)
    never = np.array([p in extra_set and p not in label_of for p in ok], dtype=bool)
    if extra and not never.any():
        raise DataError(f"{unknown_dir}: no usable unknown-speaker clip")
    enroll_mask = None
    if enroll_glob:
        enroll_mask = np.array([fnmatch.fnmatch(Path(p).name, enroll_glob) for p in ok])
        if not enroll_mask.any():
            raise DataError(f"--enroll-glob '{enroll_glob}' matches no clip in {root}")
    desc = {
        "data": str(root),
        "kind": "audio",
        "backbone": bb.name,
        "clips": len(ok),
        "skipped_clips": len(res.problems),
        "unknown_dir": str(unknown_dir) if unknown_dir else None,
        "enroll_glob": enroll_glob,
    }
    data = EvalData(
        res.embeddings,
        y.astype(str),
        enroll_mask=enroll_mask,
        never_known=never,
        description=desc,
        paths=[Path(p) for p in ok],
    )
    return data, bb


def synthetic_augment(
    data: EvalData, backbone: Any, workspace: Workspace, seed: int, backbone_source: Path | None = None
) -> Augment:
    """Per fold, what `srpl synthesize` + `tune --synthetic` would add: variants of that fold's
    enrollment clips as extra enrollment, synthetic voices as unknown samples (perturb engine)."""
    from srpl_cli.pipeline import synthesize
    from srpl_cli.synthesis.run import read_synthetic, variant_sources

    if data.paths is None:
        raise UsageError("synthetic augmentation needs audio data")

    def augment(fold: Fold) -> tuple[np.ndarray | None, ...]:
        enroll: dict[str, list[Path]] = {}
        for i in fold.enroll:
            enroll.setdefault(str(data.y[i]), []).append(data.paths[i])
        position = {str(data.paths[i]): k for k, i in enumerate(fold.enroll)}
        workspace.ensure()
        with workspace.building(f"synth-fold{fold.index}") as tmp:
            out = tmp / "synth"
            synthesize(enroll, out, seed=seed + fold.index, _backbone=backbone)
            known, unknown = read_synthetic(out)
            source = variant_sources(out)
            extra = [(s, p) for s, clips in known.items() for p in clips]
            X_extra = y_extra = X_unknown = origin = None
            if extra:
                res = embed_clips([p for _, p in extra], backbone, workspace)
                label = {str(p): s for s, p in extra}
                X_extra = res.embeddings
                y_extra = np.array([label[str(p)] for p in res.paths_ok])
                origin = np.array([position.get(source.get(str(p), ""), -1) for p in res.paths_ok])
            if unknown:
                X_unknown = embed_clips(unknown, backbone, workspace).embeddings
        return X_extra, y_extra, X_unknown, origin

    return augment


# ---------------------------------------------------------------- protocols
def load_cohort(
    path: Path,
    embedding_data: bool,
    backbone: Any,
    workspace: Workspace,
    progress: Progress = None,
    option: str = "--cohort",
) -> np.ndarray:
    """``--cohort`` (or ``--unlabeled``): embeddings (``<dir>/<speaker>/<n>.npy``; folder names are
    ignored) for embedding data, else audio embedded with the evaluation's backbone (through the cache)."""
    from srpl_cli.datasets import collect_audio, read_embedding_split

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such directory ({option})")
    if embedding_data:
        return read_embedding_split(path.parent, path.name).X
    res = embed_clips(collect_audio([path]), backbone, workspace, progress)
    if len(res.paths_ok) < 2:
        raise DataError(f"{path}: fewer than 2 usable clips ({option})")
    return res.embeddings


def check_cohort(methods: Sequence[str], data: EvalData, augment: bool = False) -> None:
    """Fail before any fitting when a cohort backend has nothing to normalise against."""
    from srpl_cli.backends import backend_class
    from srpl_cli.backends.as_norm import NEEDS_COHORT

    needy = [m for m in methods if backend_class(m).uses_cohort]
    if needy and data.cohort is None and data.X_unknown_train is None and not augment:
        raise UsageError(NEEDS_COHORT)


def check_pool(methods: Sequence[str], have_pool: bool) -> None:
    """Fail before any fitting when a pool backend has no pool to learn from."""
    from srpl_cli.backends import backend_class
    from srpl_cli.backends.pool_propagation import NEEDS_POOL

    if not have_pool and any(backend_class(m).uses_pool for m in methods):
        raise UsageError(NEEDS_POOL)


def _fit(calibrate: bool, cohort: np.ndarray | None = None):
    """The per-method fit: calibrated as `tune` does, or plain; cohort backends get ``cohort`` as their
    unknown samples (when given), every other backend the protocol's own unknown samples.

    The fold's unlabeled pool goes to every method except the baseline, which stays cosine with
    enrollment-only calibration (today's behaviour, the reference every gain is paired against): pool
    backends learn from it, every method's threshold may be read from its score mixture."""
    from srpl_cli.backends import backend_class, get_backend

    def fit(
        method: str,
        X: np.ndarray,
        y: np.ndarray,
        Xu: np.ndarray | None,
        seed: int,
        fold: Fold | None = None,
        origin: np.ndarray | None = None,
        pool: np.ndarray | None = None,
    ):
        cls = backend_class(method)
        if cohort is not None and cls.uses_cohort:
            Xu = cohort
        if method == BASELINE:
            pool = None
        if calibrate:
            return fit_backend(method, X, y, Xu, seed, origin=origin, pool=pool)[0]
        kwargs = {"random_state": seed} if "random_state" in cls._param_names() else {}
        _, Xu, learn_pool = route_pool(cls, X, y, Xu, pool)  # as tune routes it (calibration.fit_backend)
        return get_backend(method, **kwargs).fit(X, y, learn_pool if cls.uses_pool else Xu)

    return fit


def run_folds(
    data: EvalData,
    methods: list[str],
    folds: int,
    known: str | None,
    shots: int,
    seed: int,
    calibrate: bool = True,
    keep_scores: bool = False,
    progress: Progress = None,
    unlabeled_share: float | None = None,
) -> FoldsReport:
    """F paired few-shot folds; with ``unlabeled_share``, that share of each fold's test clips becomes
    the fold's unlabeled pool (``split_pool``), and ``data.pool`` adds a fixed one."""
    X, y = data.X, data.y
    if known is not None and not known.strip().isdigit() and y.dtype.kind in "USO":
        n_known, known_list = None, known_names(known, y)  # audio: speakers are folder names
    else:
        n_known, known_list = parse_known(known)
    enroll_mask, never = data.enroll_mask, data.never_known
    if data.X_train is not None:  # folds draw from every labelled clip
        X = np.concatenate([data.X_train, X])
        y = np.concatenate([data.y_train, y])
        pad = np.zeros(len(data.X_train), bool)
        enroll_mask = None if enroll_mask is None else np.concatenate([~pad, enroll_mask])
        never = None if never is None else np.concatenate([pad, never])
    if n_known is None and known_list is None:
        n_speakers = len(np.unique(y if never is None else y[~never]))
        n_known = max(2, n_speakers // 2)
    split = few_shot_folds(
        y, n_known, shots, folds, seed, known_pool=known_list, enroll_mask=enroll_mask, never_known=never
    )
    if unlabeled_share is not None:
        split = split_pool(split, unlabeled_share, seed)
    check_pool(methods, unlabeled_share is not None or data.pool is not None)
    augment = data.augment
    if augment is None and data.X_unknown_train is not None:
        augment = lambda fold: (None, None, data.X_unknown_train, None)  # noqa: E731 - same in every fold
    check_cohort(methods, data, augment is not None)
    protocol = {
        **data.description,
        "folds": folds,
        "known": known_list if known_list is not None else n_known,
        "shots": shots,
        "seed": seed,
        "cs_my": augment is not None,
        "cohort": None if data.cohort is None else len(data.cohort),
        "unlabeled_share": unlabeled_share,
        "unlabeled": None if data.pool is None else len(data.pool),
    }
    fit = _fit(calibrate, data.cohort)
    return evaluate_folds(
        X, y, split, methods, fit, seed, augment, keep_scores, progress, protocol, fixed_pool=data.pool
    )


def run_fixed_split(
    data: EvalData,
    methods: list[str],
    known: str | None,
    shots: int | None,
    seed: int,
    calibrate: bool = True,
    keep_scores: bool = False,
) -> SplitReport:
    """The reference scripts' protocol: train on emb_train (or the first N files), test on emb_test."""
    _, known_list = parse_known(known, counts=False)
    if shots is not None and shots < 1:
        raise UsageError("--shots must be at least 1")
    X, y = data.X, data.y
    if data.X_train is not None and shots is None:
        Xtr, ytr = data.X_train, data.y_train
        train_ids = set(np.unique(ytr).tolist())
        known_ids = sorted(set(known_list) if known_list else train_ids)
        missing = [k for k in known_ids if k not in train_ids]
        if missing:  # a known speaker the model never saw would be scored against nothing
            raise DataError(
                f"known speakers {missing[:10]} have no clips in emb_train/ (it has {sorted(train_ids)[:20]})"
            )
        keep = np.isin(ytr, known_ids)
        Xtr, ytr = Xtr[keep], ytr[keep]
        is_known = np.isin(y, known_ids)
        test_known, test_unknown = np.flatnonzero(is_known), np.flatnonzero(~is_known)
        protocol = {"split": "emb_train -> emb_test", "known": known_ids}
    else:
        if shots is None:
            raise UsageError(
                f"{data.description.get('data')} has no emb_train/: give --shots N (and --known)"
            )
        if not known_list:
            raise UsageError("say which speakers are known, e.g. --known 0-4 (or use --folds)")
        fold = first_n_split(y, data.order if data.order is not None else np.zeros(len(y)), known_list, shots)
        Xtr, ytr = X[fold.enroll], y[fold.enroll]
        test_known, test_unknown = fold.test_known, fold.test_unknown
        protocol = {"split": f"first {shots} files of each known speaker", "known": known_list}
    if len(test_unknown) == 0:
        raise DataError("no unknown speakers in the test split")
    if len(test_known) == 0:
        raise DataError(f"none of the known speakers {protocol['known'][:10]} has test clips in emb_test/")
    check_cohort(methods, data)
    check_pool(methods, data.pool is not None)
    fit = _fit(calibrate, data.cohort)
    results = {}
    for m in methods:
        model = fit(m, Xtr, ytr, data.X_unknown_train, seed, None, None, data.pool)
        results[m] = score_method(model, X[test_known], y[test_known], X[test_unknown], keep_scores)
    return SplitReport(results, {**data.description, **protocol, "cs_my": data.X_unknown_train is not None})


def run_checkpoint(
    data: EvalData, checkpoint: Path, known: str | None, keep_scores: bool = False
) -> SplitReport:
    """Score a saved srpl model or the authors' released checkpoint on emb_test, without fitting."""
    model, name = load_checkpoint(checkpoint)
    _, known_list = parse_known(known, counts=False)
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    test_ids = set(np.unique(data.y).tolist())
    known_ids = known_list if known_list else [c for c in classes if c in test_ids]
    missing = [k for k in known_ids if k not in classes]
    if missing:
        raise DataError(f"known speakers {missing} are not classes of the checkpoint ({classes[:20]})")
    if not known_ids:
        raise DataError("none of the checkpoint's speakers occur in emb_test; give --known")
    is_known = np.isin(data.y, known_ids)
    if not is_known.any():
        raise DataError(f"none of the known speakers {known_ids[:10]} has clips in emb_test/")
    if is_known.all():
        raise DataError("no unknown speakers in emb_test")
    res = score_method(model, data.X[is_known], data.y[is_known], data.X[~is_known], keep_scores)
    if name.endswith("(released checkpoint)"):
        # the authors' files carry no calibrated threshold: FAR/FRR at a made-up one would mislead
        res.metrics.pop("far", None)
        res.metrics.pop("frr", None)
    protocol = {**data.description, "checkpoint": str(checkpoint), "known": known_ids}
    return SplitReport({name: res}, protocol)


def load_checkpoint(path: Path) -> tuple[Any, str]:
    """Our own saved model directory (meta.json) or the authors' ClassifierAdapt_*.pth pair."""
    from srpl_cli.backends import load_backend

    path = Path(path)
    if (path / "meta.json").is_file():
        model = load_backend(path)
        return model, model.name
    if path.is_dir() and any(path.glob("*.pth")):
        from srpl_cli.backends.reference import load_reference_checkpoint

        return load_reference_checkpoint(path), "srpl (released checkpoint)"
    raise DataError(f"{path}: not a saved srpl model (meta.json) nor the authors' checkpoint (*.pth)")


def resolve_dataset(name: str, workspace: Workspace) -> Path:
    registry = workspace.datasets()
    if name not in registry:
        known = ", ".join(sorted(registry)) or "none yet"
        raise DataError(
            f"no downloaded dataset '{name}' (registered: {known})",
            hint=f"run: srpl download --dataset {name}",
        )
    return Path(registry[name]["path"])
