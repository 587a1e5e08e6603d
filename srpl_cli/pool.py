"""The unlabeled pool: embeddings of clips the deployment has heard, stored in the workspace.

Clips of unknown identity (enrolled people and strangers mixed: recordings from the device, the TV,
visitors) are what pool-aware methods learn the room from (``srpl_cli.backends.pool_propagation``,
``srpl_cli.pool_threshold``). ``srpl tune --unlabeled DIR`` and ``srpl identify --learn`` add clips;
every later ``tune`` uses them. Only embeddings are stored, with provenance (where each clip came from,
its content hash, when and by which command it was added); labels are never stored because there are
none.

Layout (docs/workspace.md)::

    pool/<backbone>/embeddings.npy   (n, dim) float32, row i = clips[i]
    pool/<backbone>/pool.json        {"backbone_id": ..., "clips": [{path, sha256, source, added}, ...]}

The directory is rebuilt under ``tmp/`` and swapped in whole under the workspace lock, and readers take
that lock too, so a reader sees the old pool or the new one. A clip whose content is already in the pool is not added again (the
same recording under another name would count twice). Embeddings of other weights or another front end
(``srpl_cli.model_backbone``) are dropped with a warning when clips are added: they live in another
space. Another CPU path (``:bf16``) is the same space.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.errors import WorkspaceError
from srpl_cli.workspace import Workspace

log = logging.getLogger(__name__)

#: at most this many clips are kept (the most recent): propagation builds an n^2 graph
MAX_POOL_CLIPS = 5000


@dataclass
class Pool:
    """Pool embeddings and one provenance record per row."""

    X: np.ndarray
    clips: list[dict[str, Any]] = field(default_factory=list)
    backbone_id: str | None = None

    def __len__(self) -> int:
        return len(self.X)


def load_pool(workspace: Workspace, backbone: str, backbone_id: str | None = None) -> Pool:
    """The stored pool for ``backbone`` (empty when none). With ``backbone_id``, rows embedded with other
    weights are left out (and a warning says so).

    Read under the workspace lock: a writer swaps the folder in two renames (old aside, new in), so an
    unlocked reader could find no pool between them, or the old pool.json beside the new embeddings.
    Callers that already hold the lock use ``read_pool``.
    """
    with workspace.lock():
        return read_pool(workspace, backbone, backbone_id)


def read_pool(workspace: Workspace, backbone: str, backbone_id: str | None = None) -> Pool:
    """``load_pool`` for a caller that holds the workspace lock."""
    d = workspace.pool_dir(backbone)
    if not (d / "pool.json").is_file():
        return Pool(np.zeros((0, 0), np.float32))
    try:
        meta = json.loads((d / "pool.json").read_text())
        X = np.load(d / "embeddings.npy", allow_pickle=False)
        clips = list(meta["clips"])
        stored_id = meta.get("backbone_id")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WorkspaceError(f"unlabeled pool {d} is unreadable ({exc}); remove that folder") from None
    if X.ndim != 2 or len(X) != len(clips) or not np.isfinite(X).all():
        raise WorkspaceError(f"unlabeled pool {d} is inconsistent; remove that folder")
    if backbone_id is not None and _other_space(stored_id, backbone_id):
        log.warning(
            "the stored pool (%d clips) was embedded with other weights or front end; it is not used", len(X)
        )
        return Pool(np.zeros((0, X.shape[1]), np.float32), [], backbone_id)
    return Pool(X.astype(np.float32), clips, stored_id)


def _other_space(stored_id: str | None, backbone_id: str) -> bool:
    """Pool rows are of another embedding space: other weights or front end (not another CPU path)."""
    from srpl_cli.model_backbone import mismatch

    return stored_id is None or mismatch(stored_id, backbone_id, "the pool") is not None


def add_to_pool(
    workspace: Workspace,
    backbone: str,
    backbone_id: str,
    X: np.ndarray,
    paths: Sequence[str | Path],
    hashes: Sequence[str],
    source: str,
) -> tuple[Pool, int]:
    """Add clips (rows of ``X``, from ``paths``, whose bytes hash to ``hashes``: what the embedding run
    computed, ``ExtractionResult.hashes``) to the stored pool; returns (the pool, clips added).

    Clips whose content hash is already in the pool are skipped. Call without holding the lock: this
    takes it for the write.
    """
    X = np.asarray(X, dtype=np.float32)
    if not len(X) == len(paths) == len(hashes):
        raise ValueError(f"{len(X)} embeddings, {len(paths)} paths and {len(hashes)} hashes")
    with workspace.lock():
        old = read_pool(workspace, backbone, backbone_id)
        seen = {c.get("sha256") for c in old.clips}
        rows, records = [], []
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for i, (p, digest) in enumerate(zip(paths, hashes, strict=True)):
            if digest in seen:
                continue
            seen.add(digest)
            rows.append(i)
            records.append(
                {"path": str(Path(p).absolute()), "sha256": digest, "source": source, "added": now}
            )
        if not rows:
            return old, 0
        parts = [old.X] if len(old) else []
        new_X = np.concatenate(parts + [X[rows]])
        clips = old.clips + records
        if len(clips) > MAX_POOL_CLIPS:  # keep the most recent: the room as it sounds now
            new_X, clips = new_X[-MAX_POOL_CLIPS:], clips[-MAX_POOL_CLIPS:]
        workspace.save_pool(
            backbone, new_X, {"backbone": backbone, "backbone_id": backbone_id, "clips": clips}
        )
        return Pool(new_X, clips, backbone_id), len(rows)


def in_domain_negatives(X: np.ndarray, y: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Pool clips that do not clearly belong to an enrolled speaker: in-domain strangers for methods that
    train on unknown samples (``pool_negatives`` backends, e.g. srpl-v2).

    A clip is left out when its cosine to some speaker's mean enrollment is at least the lowest
    leave-one-out cosine of that speaker's enrollment clips to their own mean (it sounds as much like
    that speaker as the speaker's own clips do). Labels of the pool are never used.
    """
    Z = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    P = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-12)
    classes, y_idx = np.unique(np.asarray(y), return_inverse=True)
    sums = np.stack([Z[y_idx == k].sum(axis=0) for k in range(len(classes))])
    counts = np.bincount(y_idx, minlength=len(classes))
    level = np.ones(len(classes))  # one clip: no leave-one-out level, nothing is claimed by it
    for k in range(len(classes)):
        if counts[k] >= 2:
            rows = Z[y_idx == k]
            loo = (sums[k] - rows) / np.linalg.norm(sums[k] - rows, axis=1, keepdims=True)
            level[k] = float((loo * rows).sum(axis=1).min())
    means = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    claimed = (P @ means.T >= level[None, :]).any(axis=1)
    return pool[~claimed]
