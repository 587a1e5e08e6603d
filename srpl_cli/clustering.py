"""Strangers are not one blob: group a recording's unknown segments into unknown-1, unknown-2, ...

Agglomerative clustering (scipy's ``linkage``, average linkage on cosine distance) of the segments'
embeddings. Stopping rule: two groups are merged only while the mean cosine similarity between their
members is at least ``threshold``, the similarity at which the backbone's own enrollment clips are as
likely to come from the same person as from two people (the equal-error point of same-speaker and
different-speaker pairs, ``same_speaker_threshold``). Segments shorter than ``min_duration_s`` carry too
little voice to start a group of their own: they join the nearest group (or form one if there is none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: used when the enrollment has fewer than two speakers with clips (no different-speaker pairs); the
#: equal-error point of the d-vector on librispeech-mini enrollments is close to it (docs/segments.md)
FALLBACK_THRESHOLD = 0.75


def _normalize(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def same_speaker_threshold(embeddings_by_speaker: Mapping[str, np.ndarray]) -> float:
    """Cosine similarity where same-speaker and different-speaker enrollment pairs are equally likely.

    Found as the equal-error point of the two pair lists (every same-speaker pair, every cross-speaker
    pair). Needs two speakers, one of them with at least two clips; else ``FALLBACK_THRESHOLD``.
    """
    from srpl_cli.calibration import equal_error_threshold

    groups = [_normalize(X) for X in embeddings_by_speaker.values() if len(X)]
    same: list[np.ndarray] = []
    diff: list[np.ndarray] = []
    for i, A in enumerate(groups):
        S = A @ A.T
        same.append(S[np.triu_indices(len(A), 1)])
        for B in groups[i + 1 :]:
            diff.append((A @ B.T).ravel())
    same_all = np.concatenate(same) if same else np.zeros(0)
    diff_all = np.concatenate(diff) if diff else np.zeros(0)
    if len(same_all) == 0 or len(diff_all) == 0:
        return FALLBACK_THRESHOLD
    return equal_error_threshold(same_all, diff_all)


def cluster_segments(
    embeddings: np.ndarray,
    durations: Sequence[float],
    threshold: float,
    min_duration_s: float = 1.0,
) -> np.ndarray:
    """Cluster index (0, 1, ... in order of first appearance) of each segment.

    embeddings : (n, dim), one per segment (the mean of its window embeddings), in time order.
    """
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    X = _normalize(embeddings)
    durations = np.asarray(durations, dtype=np.float64)
    seeds = np.flatnonzero(durations >= min_duration_s)
    if len(seeds) == 0:  # only short scraps: cluster them all rather than call everything one person
        seeds = np.arange(n)
    labels = np.full(n, -1, dtype=np.int64)
    if len(seeds) == 1:
        labels[seeds] = 0
    else:
        from scipy.cluster.hierarchy import fcluster, linkage

        Z = linkage(X[seeds], method="average", metric="cosine")
        # merge while the average cosine distance is at most 1 - threshold
        labels[seeds] = fcluster(Z, t=max(0.0, 1.0 - threshold), criterion="distance") - 1
    k = int(labels.max()) + 1
    centroids = _normalize(np.stack([X[labels == c].mean(axis=0) for c in range(k)]))
    rest = np.flatnonzero(labels < 0)
    if len(rest):
        labels[rest] = np.argmax(X[rest] @ centroids.T, axis=1)
    # number groups by first appearance, so unknown-1 is the first stranger to speak
    order: dict[int, int] = {}
    for c in labels:
        order.setdefault(int(c), len(order))
    return np.array([order[int(c)] for c in labels], dtype=np.int64)
