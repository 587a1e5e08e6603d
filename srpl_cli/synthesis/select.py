"""Selection policy for synthetic speech (the SpeakerRPL authors' Interspeech 2025 follow-up).

Synthesis makes more candidates than are useful: a variant can drift away from its speaker, and a
pseudo-unknown can land on top of an enrolled speaker (then training would teach the model to
reject that speaker). The policy filters both with the backbone's own embeddings:

* known variants: per target speaker keep the ``k_known`` variants nearest its enrollment centroid;
* unknowns: only candidates whose mean cosine to the target centroids is below ``unknown_bound``
  are eligible; per target pick ``n_unknown`` of them alternately the nearest and the farthest from
  that target, so the kept unknowns cover both the hard border and the far space.

Pure numpy on embeddings, so it is cheap and testable on constructed vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from srpl_cli.errors import DataError


@dataclass(frozen=True)
class SelectionParams:
    """Knobs of the policy; ``None`` disables a filter (keep all variants / no cosine bound)."""

    k_known: int | None = 3
    unknown_bound: float | None = 0.3
    n_unknown: int | None = 12

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SelectionResult:
    """Indices into the candidate arrays that were kept / dropped, with their scores.

    ``known_scores[i]`` is the cosine of known candidate ``i`` to its own speaker's centroid;
    ``unknown_scores[i]`` the mean cosine of unknown candidate ``i`` to all target centroids.
    """

    known_kept: list[int]
    known_dropped: list[int]
    unknown_kept: list[int]
    unknown_dropped: list[int]
    known_scores: list[float] = field(default_factory=list)
    unknown_scores: list[float] = field(default_factory=list)
    unknown_eligible: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "known": {"kept": len(self.known_kept), "dropped": len(self.known_dropped)},
            "unknown": {
                "kept": len(self.unknown_kept),
                "dropped": len(self.unknown_dropped),
                "below_bound": self.unknown_eligible,
            },
        }


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"expected a 2-D embedding array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def centroids(enroll: np.ndarray, enroll_labels: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """Per-speaker L2-normalised mean of normalised enrollment embeddings -> (speakers, (K, dim))."""
    labels = np.asarray(enroll_labels)
    if len(labels) != len(enroll):
        raise DataError(f"{len(enroll)} enrollment embeddings but {len(labels)} labels")
    x = _normalize(enroll)
    speakers = list(dict.fromkeys(labels.tolist()))
    cents = np.stack([x[labels == s].mean(axis=0) for s in speakers])
    return speakers, _normalize(cents)


def select(
    enroll: np.ndarray,
    enroll_labels: Sequence[Any],
    known: np.ndarray | None = None,
    known_labels: Sequence[Any] | None = None,
    unknown: np.ndarray | None = None,
    params: SelectionParams | None = None,
) -> SelectionResult:
    """Apply the policy.

    enroll : (n, dim) real enrollment embeddings, ``enroll_labels`` their speakers.
    known : (m, dim) synthetic variants, ``known_labels`` the speaker each was made from.
    unknown : (u, dim) synthetic (or real) unknown candidates.
    """
    params = params or SelectionParams()
    speakers, cents = centroids(enroll, enroll_labels)
    res = SelectionResult([], [], [], [])

    if known is not None and len(known):
        klabels = np.asarray(known_labels if known_labels is not None else [])
        if len(klabels) != len(known):
            raise DataError(f"{len(known)} variant embeddings but {len(klabels)} labels")
        kx = _normalize(known)
        index = {s: i for i, s in enumerate(speakers)}
        scores = np.full(len(kx), np.nan)
        for s in dict.fromkeys(klabels.tolist()):
            idx = np.flatnonzero(klabels == s)
            if s not in index:
                raise DataError(f"variant of speaker '{s}' who has no enrollment embedding")
            scores[idx] = kx[idx] @ cents[index[s]]
            order = idx[np.argsort(-scores[idx], kind="stable")]
            keep = order if params.k_known is None else order[: params.k_known]
            res.known_kept.extend(int(i) for i in keep)
        res.known_kept.sort()
        kept = set(res.known_kept)
        res.known_dropped = [i for i in range(len(kx)) if i not in kept]
        res.known_scores = [float(s) for s in scores]

    if unknown is not None and len(unknown):
        ux = _normalize(unknown)
        sims = ux @ cents.T  # (u, K)
        mean_sim = sims.mean(axis=1)
        eligible = (
            np.arange(len(ux))
            if params.unknown_bound is None
            else np.flatnonzero(mean_sim < params.unknown_bound)
        )
        res.unknown_eligible = int(eligible.size)
        res.unknown_scores = [float(s) for s in mean_sim]
        if params.n_unknown is None:
            chosen = set(int(i) for i in eligible)
        else:
            chosen = set()
            for k in range(len(speakers)):
                order = [int(i) for i in eligible[np.argsort(-sims[eligible, k], kind="stable")]]
                picked, lo, hi, near = 0, 0, len(order) - 1, True
                while picked < params.n_unknown and lo <= hi:
                    if near:
                        i, lo = order[lo], lo + 1
                    else:
                        i, hi = order[hi], hi - 1
                    if i in chosen:
                        continue
                    chosen.add(i)
                    picked += 1
                    near = not near
        res.unknown_kept = sorted(chosen)
        res.unknown_dropped = [i for i in range(len(ux)) if i not in chosen]
    return res
