"""Who spoke when: open-set identification along a long recording.

speech regions (the VAD) -> overlapping windows -> embeddings (batched, cached per recording) -> the tuned
model's open-set scores per window -> temporal smoothing (Viterbi with a switch penalty) -> segments
``start, end, speaker | unknown-N, score``, the strangers clustered into unknown-1, unknown-2, ...

The recording is read in blocks (``audio.iter_blocks``), so memory does not grow with its length: only
one block of audio (plus the speech region that runs over its end) and one small embedding per window
are held. ``identify_segments`` takes an already loaded backend and backbone, so the CLI and the server
share this one code path; ``load_segmenter`` loads them from a workspace.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli.audio import AUDIO_PARAMS_VERSION, SAMPLE_RATE, audio_duration, iter_blocks
from srpl_cli.clustering import FALLBACK_THRESHOLD, cluster_segments, same_speaker_threshold
from srpl_cli.errors import AudioError, DataError, UsageError
from srpl_cli.vad import detector_name, speech_regions

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None] | None

UNKNOWN = "unknown"
#: bump when windowing or region handling changes: part of the window-cache key
SEGMENTS_VERSION = "1"
#: seconds of audio read at a time
BLOCK_S = 60.0
#: a speech region that runs over a block's end is carried into the next block, up to this length
MAX_CARRY_S = 30.0
#: windows sent to the backbone at once
EMBED_BATCH = 64


@dataclass(frozen=True)
class SegmentParams:
    """How a recording is cut and smoothed (defaults measured in docs/segments.md).

    window_s, hop_s: analysis windows inside speech regions (1.6 s is one d-vector partial).
    switch_penalty: Viterbi cost of changing speaker between two neighbouring windows, in units of the
        per-window evidence (scores are divided by their spread over the recording, see ``smooth``).
    pause_s: a pause at least this long between windows makes a change of speaker free of that cost
        (turns usually change at pauses).
    min_pause_s: speech regions closer than this are one region (the detector splits sentences at
        breaths and word gaps; a segment should not).
    min_cluster_s: unknown segments shorter than this join the nearest stranger instead of founding one.
    decision: "segment" (default): the smoothed windows only place the boundaries; each segment is then
        identified like a clip, from the mean of its window embeddings (the d-vector of a clip is the mean
        of its partials), against the threshold calibrated on clips. "window": the smoothed window
        labels are the answer.
    """

    window_s: float = 1.6
    hop_s: float = 0.8
    switch_penalty: float = 2.0
    pause_s: float = 0.5
    min_pause_s: float = 1.0
    min_cluster_s: float = 3.0
    decision: str = "segment"

    def check(self) -> SegmentParams:
        if not (0.2 <= self.window_s <= 10.0):
            raise UsageError("--window must be between 0.2 and 10 seconds")
        if not (0.05 <= self.hop_s <= self.window_s):
            raise UsageError("--hop must be between 0.05 s and the window length")
        if self.switch_penalty < 0:
            raise UsageError("--switch-penalty must be 0 or more")
        if self.decision not in ("segment", "window"):
            raise UsageError("decision must be 'segment' or 'window'")
        if self.pause_s < 0 or self.min_cluster_s < 0 or self.min_pause_s < 0:
            raise UsageError("pause and cluster durations must be 0 or more")
        return self


@dataclass(frozen=True)
class Segment:
    """One stretch of speech by one speaker (an enrolled name, or ``unknown-N``).

    score: the backend's score for that speaker averaged over the segment's windows; for a stranger,
    the best enrolled speaker's score (below the threshold, which is why it is a stranger).
    """

    start: float
    end: float
    speaker: str
    score: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def is_unknown(self) -> bool:
        return self.speaker.startswith(UNKNOWN)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "speaker": self.speaker,
            "score": round(self.score, 4),
        }


@dataclass
class SegmentsResult:
    path: str
    duration_s: float
    speech_s: float
    segments: list[Segment]
    speakers: list[str]
    threshold: float
    cluster_threshold: float
    detector: str
    backbone: str
    n_windows: int
    params: dict[str, float] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """One JSON object per segment (what ``--json`` prints)."""
        return [{"path": self.path, **s.to_dict()} for s in self.segments]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["segments"] = [s.to_dict() for s in self.segments]
        return d

    def speaker_times(self) -> dict[str, float]:
        """Seconds of speech per label, longest first."""
        totals: dict[str, float] = {}
        for s in self.segments:
            totals[s.speaker] = totals.get(s.speaker, 0.0) + s.duration
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))

    def rttm(self) -> str:
        from srpl_cli.rttm import format_rttm

        return format_rttm(Path(self.path).stem, [(s.start, s.end, s.speaker) for s in self.segments])


# ---------------------------------------------------------------- windows and their embeddings
@dataclass
class WindowTrack:
    """What the audio pass yields: speech regions, windows in them and one embedding per window.

    regions : (m, 2) int64 sample bounds; windows : (n, 2) int64; region_of : (n,) int64;
    embeddings : (n, dim) float32. All in time order.
    """

    n_samples: int
    regions: np.ndarray
    windows: np.ndarray
    region_of: np.ndarray
    embeddings: np.ndarray
    sr: int = SAMPLE_RATE


def bridge(regions: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    """``regions`` with gaps shorter than ``min_gap`` samples closed."""
    out: list[tuple[int, int]] = []
    for a, b in regions:
        if out and a - out[-1][1] < min_gap:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def window_bounds(start: int, end: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Windows of ``window`` samples every ``hop`` in [start, end); the last ends at ``end``.

    A region no longer than one window is one window.
    """
    if end - start <= window:
        return [(start, end)]
    out = []
    a = start
    while a + window < end:
        out.append((a, a + window))
        a += hop
    out.append((end - window, end))
    return out


class WindowCache:
    """Window embeddings of whole recordings under ``root/segments/<backbone>/<key>.npz`` (no pickle).

    Keyed by the file's bytes, the backbone, the speech detector and the window settings, so running
    again with another threshold, penalty or model of the same backbone costs no audio work.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root) / "segments"

    def key(self, path: Path, backbone_id: str, params: SegmentParams) -> Path:
        from srpl_cli.embeddings import file_sha256

        parts = [
            file_sha256(path),
            backbone_id,
            detector_name(),
            f"w{params.window_s:g}h{params.hop_s:g}p{params.min_pause_s:g}",
            f"a{AUDIO_PARAMS_VERSION}s{SEGMENTS_VERSION}",
        ]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone_id).strip("_") or "backbone"
        return self.root / safe / digest[:2] / f"{digest}.npz"

    def get(self, key: Path, dim: int) -> WindowTrack | None:
        if not key.is_file():
            return None
        try:
            with np.load(key, allow_pickle=False) as z:
                track = WindowTrack(
                    int(z["n_samples"]), z["regions"], z["windows"], z["region_of"], z["embeddings"]
                )
        except (OSError, ValueError, KeyError, EOFError) as exc:
            log.warning("ignoring corrupt window cache entry %s (%s)", key, exc)
            return None
        if track.embeddings.ndim != 2 or track.embeddings.shape[1] != dim:
            return None
        return track

    def put(self, key: Path, track: WindowTrack) -> None:
        from srpl_cli._io import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(
            buf,
            n_samples=np.int64(track.n_samples),
            regions=track.regions,
            windows=track.windows,
            region_of=track.region_of,
            embeddings=track.embeddings,
        )
        try:
            atomic_write_bytes(key, buf.getvalue())
        except OSError as exc:  # a read-only workspace only costs recomputing next time
            log.warning("cannot write the window cache %s (%s)", key, exc.strerror or exc)


def embed_windows(
    path: str | Path, backbone: Any, params: SegmentParams, progress: Progress = None
) -> WindowTrack:
    """Stream ``path``: find speech, cut windows and embed them in batches (memory flat in duration).

    A speech region still open at a block's end (or closer to it than ``min_pause_s``) is carried, up to
    ``MAX_CARRY_S``, into the next block and the detector runs again over carry + block, so a region is
    not cut where a block happens to end (a longer one is: it then counts as two regions).
    """
    sr = SAMPLE_RATE
    window = int(round(params.window_s * sr))
    hop = int(round(params.hop_s * sr))
    min_gap = int(round(params.min_pause_s * sr))
    total_s = int(np.ceil(audio_duration(path)))
    regions: list[tuple[int, int]] = []
    bounds: list[tuple[int, int]] = []
    region_of: list[int] = []
    embedded: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            embs = np.asarray(backbone.embed(pending), dtype=np.float32)
            if embs.shape != (len(pending), backbone.dim):
                raise ValueError(f"backbone returned {embs.shape}, expected ({len(pending)}, {backbone.dim})")
            embedded.append(embs)
            pending.clear()

    def take(buf: np.ndarray, buf_off: int, found: list[tuple[int, int]]) -> None:
        for a, b in found:
            regions.append((buf_off + a, buf_off + b))
            for wa, wb in window_bounds(a, b, window, hop):
                bounds.append((buf_off + wa, buf_off + wb))
                region_of.append(len(regions) - 1)
                pending.append(np.array(buf[wa:wb], dtype=np.float32))  # a copy: the block is freed
                if len(pending) >= EMBED_BATCH:
                    flush()

    carry = np.zeros(0, dtype=np.float32)
    carry_off = 0
    n_samples = 0
    for offset, block in iter_blocks(path, block_s=BLOCK_S, target_sr=sr):
        n_samples = offset + len(block)
        buf = np.concatenate([carry, block]) if len(carry) else block
        buf_off = carry_off if len(carry) else offset
        found = bridge(speech_regions(buf, sr), min_gap)
        carry = np.zeros(0, dtype=np.float32)
        # the last region ending near the block's end may go on (or be bridged) in the next block
        if (
            found
            and found[-1][1] >= len(buf) - max(min_gap, int(0.05 * sr))
            and found[-1][1] - found[-1][0] < MAX_CARRY_S * sr
        ):
            a = found.pop()[0]
            carry, carry_off = np.array(buf[a:], dtype=np.float32), buf_off + a
        take(buf, buf_off, found)
        if progress is not None:
            progress(min(total_s, int(n_samples / sr)), total_s)
    if len(carry):
        take(carry, carry_off, bridge(speech_regions(carry, sr), min_gap))
    flush()
    dim = backbone.dim
    return WindowTrack(
        n_samples=n_samples,
        regions=np.asarray(regions, dtype=np.int64).reshape(-1, 2),
        windows=np.asarray(bounds, dtype=np.int64).reshape(-1, 2),
        region_of=np.asarray(region_of, dtype=np.int64),
        embeddings=np.concatenate(embedded) if embedded else np.zeros((0, dim), np.float32),
    )


# ---------------------------------------------------------------- smoothing
def evidence(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per-window evidence (n, K+1): each speaker's margin over the threshold, scale-free; unknown is 0.

    Margins are divided by their spread (the median absolute top-1 margin of the recording), so one
    switch penalty means the same for every backend whatever its score scale, then clipped to [-3, 3]
    so a single odd window cannot outvote its neighbours.
    """
    margins = np.asarray(scores, dtype=np.float64) - threshold
    if len(margins) == 0:
        return np.zeros((0, margins.shape[1] + 1))
    scale = float(np.median(np.abs(margins.max(axis=1))))
    scale = scale if scale > 1e-9 else 1.0
    E = np.zeros((len(margins), margins.shape[1] + 1))
    E[:, :-1] = np.clip(margins / scale, -3.0, 3.0)
    return E


def viterbi(E: np.ndarray, switch_cost: np.ndarray) -> np.ndarray:
    """Best state path of ``E`` (n, S) (higher is better) with ``switch_cost[t]`` to change at t -> t+1.

    O(n S): the best predecessor is either the same state or the best state overall minus the cost.
    """
    n, S = E.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    back = np.zeros((n, S), dtype=np.int64)
    total = E[0].copy()
    for t in range(1, n):
        best = int(np.argmax(total))
        switch = total[best] - switch_cost[t - 1]
        stay = total >= switch
        back[t] = np.where(stay, np.arange(S), best)
        total = np.where(stay, total, switch) + E[t]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def smooth(scores: np.ndarray, threshold: float, track: WindowTrack, params: SegmentParams) -> np.ndarray:
    """State per window (0..K-1 a speaker, K unknown) after the switch-penalised Viterbi pass."""
    E = evidence(scores, threshold)
    w = track.windows
    gaps = (w[1:, 0] - w[:-1, 1]) / track.sr if len(w) > 1 else np.zeros(0)
    cost = np.where(gaps >= params.pause_s, 0.0, params.switch_penalty)
    return viterbi(E, cost)


# ---------------------------------------------------------------- segments
def _runs(track: WindowTrack, states: np.ndarray) -> list[tuple[int, int, int, np.ndarray]]:
    """(start sample, end sample, state, window indices) per run of one state inside one region.

    Inside a region, a change between two windows is placed midway between their centres.
    """
    out = []
    centres = track.windows.mean(axis=1)
    for r, (ra, rb) in enumerate(track.regions):
        idx = np.flatnonzero(track.region_of == r)
        if len(idx) == 0:
            continue
        start = int(ra)
        first = 0
        for j in range(1, len(idx) + 1):
            if j == len(idx) or states[idx[j]] != states[idx[first]]:
                end = int(rb) if j == len(idx) else int((centres[idx[j - 1]] + centres[idx[j]]) / 2)
                if end > start:
                    out.append((start, end, int(states[idx[first]]), idx[first:j]))
                start = end
                first = j
    return out


def _decide(
    runs: list[tuple[int, int, int, np.ndarray]],
    E: np.ndarray,
    track: WindowTrack,
    backend: Any,
    threshold: float,
    K: int,
) -> list[tuple[int, int, int, np.ndarray]]:
    """Each run identified like a clip (mean of its windows' embeddings vs the threshold); neighbouring
    runs of one region that end up with the same answer become one."""
    S = backend.decision_function(np.stack([E[idx].mean(axis=0) for *_, idx in runs]))
    best = S.argmax(axis=1)
    states = np.where(S.max(axis=1) >= threshold, best, K)
    merged: list[tuple[int, int, int, np.ndarray]] = []
    for (a, b, _, idx), state in zip(runs, states, strict=True):
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and prev[2] == state
            and prev[1] == a
            and track.region_of[prev[3][-1]] == track.region_of[idx[0]]
        ):
            merged[-1] = (prev[0], b, int(state), np.concatenate([prev[3], idx]))
        else:
            merged.append((a, b, int(state), idx))
    return merged


def _run_scores(
    runs: list[tuple[int, int, int, np.ndarray]],
    E: np.ndarray,
    window_scores: np.ndarray,
    backend: Any,
    K: int,
    decision: str,
) -> list[float]:
    """A segment's score for its speaker (for a stranger: the best enrolled speaker's score), from the
    segment's mean embedding ("segment") or as the mean of its windows' scores ("window")."""
    if not runs:
        return []
    if decision == "segment":
        S = backend.decision_function(np.stack([E[idx].mean(axis=0) for *_, idx in runs]))
    else:
        S = np.stack([window_scores[idx].mean(axis=0) for *_, idx in runs])
    return [
        float(row.max() if state == K else row[state]) for row, (_, _, state, _) in zip(S, runs, strict=True)
    ]


def identify_segments(
    path: str | Path,
    backend: Any,
    backbone: Any,
    *,
    threshold: float | None = None,
    cluster_threshold: float | None = None,
    params: SegmentParams | None = None,
    cache: WindowCache | None = None,
    progress: Progress = None,
) -> SegmentsResult:
    """Who speaks when in ``path``: enrolled names, or strangers clustered into unknown-1, unknown-2, ...

    backend: a fitted open-set backend (``decision_function``, ``threshold_``, ``classes_``);
    backbone: the loaded speaker model it was tuned on; threshold: overrides ``backend.threshold_``;
    cluster_threshold: the stopping similarity of the strangers' clustering (``same_speaker_threshold``
    of the enrollment, see ``load_segmenter``); cache: reuse window embeddings of a recording seen before.
    """
    params = (params or SegmentParams()).check()
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found" if not path.exists() else "not a regular file")
    key = cache.key(path, backbone.identifier, params) if cache is not None else None
    track = cache.get(key, backbone.dim) if cache is not None and key is not None else None
    if track is None:
        try:
            track = embed_windows(path, backbone, params, progress)
        except AudioError:
            raise
        except (OSError, RuntimeError, ValueError) as exc:
            if isinstance(exc, ValueError) and "backbone returned" in str(exc):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AudioError(path, f"unreadable or corrupt audio ({reason})") from None
        if cache is not None and key is not None:
            cache.put(key, track)
    names = [str(c) for c in backend.classes_]
    thr = float(backend.threshold_ if threshold is None else threshold)
    tau = float(FALLBACK_THRESHOLD if cluster_threshold is None else cluster_threshold)
    scores = (
        backend.decision_function(track.embeddings) if len(track.embeddings) else np.zeros((0, len(names)))
    )
    from srpl_cli.backends.cosine import l2_normalize

    K = len(names)
    sr = track.sr
    E = l2_normalize(track.embeddings)
    runs = _runs(track, smooth(scores, thr, track, params))
    if params.decision == "segment" and runs:
        runs = _decide(runs, E, track, backend, thr, K)
    run_scores = _run_scores(runs, E, scores, backend, K, params.decision)
    unknown_runs = [i for i, r in enumerate(runs) if r[2] == K]
    labels: dict[int, str] = {}
    if unknown_runs:
        emb = np.stack([E[runs[i][3]].mean(axis=0) for i in unknown_runs])
        durs = [(runs[i][1] - runs[i][0]) / sr for i in unknown_runs]
        groups = cluster_segments(emb, durs, tau, params.min_cluster_s)
        labels = {i: f"{UNKNOWN}-{g + 1}" for i, g in zip(unknown_runs, groups, strict=True)}
    segments = [
        Segment(a / sr, b / sr, labels[i] if state == K else names[state], run_scores[i])
        for i, (a, b, state, _) in enumerate(runs)
    ]
    speech = float((track.regions[:, 1] - track.regions[:, 0]).sum() / sr) if len(track.regions) else 0.0
    return SegmentsResult(
        path=str(path),
        duration_s=round(track.n_samples / sr, 3),
        speech_s=round(speech, 3),
        segments=segments,
        speakers=names,
        threshold=thr,
        cluster_threshold=tau,
        detector=detector_name(),
        backbone=getattr(backbone, "name", type(backbone).__name__),
        n_windows=int(len(track.windows)),
        params=asdict(params),
    )


# ---------------------------------------------------------------- loading from a workspace
@dataclass
class Segmenter:
    """A loaded model ready for ``identify_segments`` (what the CLI and the server hold)."""

    backend: Any
    backbone: Any
    cluster_threshold: float
    cache: WindowCache | None
    model: str
    version: str

    def __call__(
        self,
        path: str | Path,
        *,
        threshold: float | None = None,
        params: SegmentParams | None = None,
        progress: Progress = None,
    ) -> SegmentsResult:
        return identify_segments(
            path,
            self.backend,
            self.backbone,
            threshold=threshold,
            cluster_threshold=self.cluster_threshold,
            params=params,
            cache=self.cache,
            progress=progress,
        )


def enrollment_threshold(profiles: Mapping[str, tuple[np.ndarray, Any]], speakers: list[str]) -> float:
    """``same_speaker_threshold`` of the model's speakers' enrollment embeddings (their profiles)."""
    X_by = {s: profiles[s][0] for s in speakers if s in profiles}
    return same_speaker_threshold(X_by)


def load_segmenter(
    workspace: Any = None,
    model_name: str | None = None,
    backbone_source: str | Path | None = None,
    cluster_threshold: float | None = None,
) -> Segmenter:
    """Load the tuned model, its backbone and the strangers' stopping rule from a workspace."""
    from srpl_cli.identifier import Identifier
    from srpl_cli.workspace import DEFAULT_MODEL, Workspace

    ws = workspace or Workspace()
    identifier = Identifier.load(ws, model_name or DEFAULT_MODEL, backbone_source=backbone_source)
    return segmenter_for(identifier, ws, cluster_threshold)


def segmenter_for(
    identifier: Any, workspace: Any, cluster_threshold: float | None = None, use_cache: bool = True
) -> Segmenter:
    """The segmenter of an already loaded model (``srpl_cli.identifier.Identifier``): what `srpl identify
    --segments` and `srpl serve`'s /segments both run. ``use_cache`` False writes no window cache (the
    server keeps nothing of an upload)."""
    if cluster_threshold is None:
        try:
            profiles = workspace.load_profiles(identifier.backbone.name)
        except (OSError, ValueError, DataError):
            profiles = {}
        cluster_threshold = enrollment_threshold(profiles, identifier.speakers)
    cache = None
    if use_cache:
        try:
            workspace.ensure()
            cache = WindowCache(workspace.cache_dir)
        except (OSError, DataError) as exc:
            log.warning("no window cache (%s)", exc)
    return Segmenter(
        identifier.backend,
        identifier.backbone,
        float(cluster_threshold),
        cache,
        identifier.version.name,
        identifier.version.version,
    )
