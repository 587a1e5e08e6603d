"""Batch extraction of clip embeddings with a content-addressed cache: no clip is ever embedded twice.

The cache key is the sha256 of the file's bytes + the backbone's identifier (weights, front end) + the
audio decoding version + the speech detector (``silero-vad X.Y.Z`` or ``energy``), so renaming or moving
a clip keeps its embedding and changing the model, the decoder or the detector invalidates it. Entries
are written atomically; a corrupt entry reads as missing and is recomputed.

Clips longer than ``LONG_CLIP_S`` are never decoded whole: they are read, checked and embedded in
``STREAM_BLOCK_S`` blocks (``audio.iter_blocks``), so peak memory does not grow with their duration.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._io import atomic_write_bytes
from srpl_cli.audio import (
    AUDIO_PARAMS_VERSION,
    AudioQuality,
    QualityMeter,
    audio_duration,
    check_audible,
    check_regular_file,
    check_speech,
    iter_blocks,
    validate,
)
from srpl_cli.backbones.base import Backbone
from srpl_cli.errors import AudioError
from srpl_cli.vad import detector_name, speech_regions, speech_seconds

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
#: a batch goes to the backbone early rather than hold more decoded samples than this (10 min at 16 kHz),
#: so a folder of hour-long recordings never holds ``batch_size`` of them in memory at once
MAX_PENDING_SAMPLES = 10 * 60 * 16000
#: clips longer than this (seconds, from the header) are embedded block by block, never loaded whole
LONG_CLIP_S = 180.0
#: block length for those: the embedding is the speech-weighted mean of the blocks' embeddings
STREAM_BLOCK_S = 60.0


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class EmbeddingCache:
    """Embeddings (and the clip's quality figures) on disk, under ``root/<backbone>/<hash[:2]>/<hash>.npy``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._warned = False

    def _dir(self, backbone_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", backbone_id).strip("_") or "backbone"
        detector = re.sub(r"[^A-Za-z0-9._-]+", "-", detector_name())
        return self.root / f"{safe}__audio-v{AUDIO_PARAMS_VERSION}__{detector}"

    def path(self, content_hash: str, backbone_id: str) -> Path:
        return self._dir(backbone_id) / content_hash[:2] / f"{content_hash}.npy"

    def get(
        self, content_hash: str, backbone_id: str, dim: int | None = None
    ) -> tuple[np.ndarray, AudioQuality] | None:
        """The cached (embedding, quality), or ``None`` when absent or unreadable."""
        npy = self.path(content_hash, backbone_id)
        if not npy.is_file():
            return None
        try:
            emb = np.load(npy, allow_pickle=False)
            if not isinstance(emb, np.ndarray):  # an .npz (zip) archive put in its place
                emb.close()
                raise ValueError("not a single .npy array")
            meta = json.loads(npy.with_suffix(".json").read_text(encoding="utf-8"))
            quality = AudioQuality(**{**meta, "warnings": tuple(meta.get("warnings", ()))})
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with one entry, it is recomputed
            logger.warning(
                "ignoring corrupt cache entry %s (%s)", npy, str(exc).splitlines()[0] if str(exc) else exc
            )
            return None
        if emb.ndim != 1 or emb.dtype != np.float32 or not np.isfinite(emb).all():
            logger.warning("ignoring corrupt cache entry %s (bad array)", npy)
            return None
        if dim is not None and emb.shape[0] != dim:
            return None
        return emb, quality

    def put(
        self, content_hash: str, backbone_id: str, embedding: np.ndarray, quality: AudioQuality
    ) -> Path | None:
        """Store one entry: the quality JSON first, then the array (whose presence marks the entry).

        A failed write (read-only workspace, full disk) is logged once and costs only embedding the clip
        again next time: `identify` and `evaluate` must work on a workspace they cannot write.
        """
        npy = self.path(content_hash, backbone_id)
        try:
            atomic_write_bytes(npy.with_suffix(".json"), json.dumps(quality.to_dict()).encode("utf-8"))
            buf = io.BytesIO()
            np.save(buf, np.asarray(embedding, dtype=np.float32).reshape(-1), allow_pickle=False)
            return atomic_write_bytes(npy, buf.getvalue())
        except OSError as exc:
            if not self._warned:
                logger.warning(
                    "cannot write the embedding cache %s (%s): nothing cached", self.root, exc.strerror or exc
                )
                self._warned = True
            return None


@dataclass
class ExtractionResult:
    """Embeddings of the usable clips (input order) and one reason per clip that was not usable."""

    embeddings: np.ndarray  # (n_ok, dim) float32
    paths_ok: list[Path]
    qualities: list[AudioQuality]
    problems: list[tuple[Path, str]] = field(default_factory=list)
    backbone_id: str = ""
    n_cached: int = 0
    n_embedded: int = 0
    #: sha256 of each usable clip's bytes (row order): what the pool dedupes on, so it need not read them again
    hashes: list[str] = field(default_factory=list)


def _duration_hint(path: Path) -> float:
    """Clip duration from the header only (cheap) to bucket similar lengths; unknown sorts last."""
    try:
        return audio_duration(path)
    except Exception:  # noqa: BLE001 - unreadable clips are reported when decoded
        return float("inf")


def embed_long_clip(
    path: str | Path, backbone: Backbone, min_speech_s: float
) -> tuple[np.ndarray, AudioQuality]:
    """Embed a long clip block by block: memory stays flat with its duration.

    Each ``STREAM_BLOCK_S`` block is embedded on its own (the backbone windows it as usual); the clip's
    embedding is the mean of the block embeddings weighted by each block's seconds of detected speech
    (blocks without speech do not count), L2-normalised. Quality figures are accumulated over the blocks
    and the clip is refused, as a short one would be, when silent or with too little speech.
    """
    notes: list[str] = []
    meter = QualityMeter()
    total = np.zeros(backbone.dim, dtype=np.float64)
    weight = 0.0
    for _, block in iter_blocks(path, STREAM_BLOCK_S, notes=notes):
        regions = speech_regions(block)
        meter.add(block, regions)
        seconds = speech_seconds(regions)
        if seconds <= 0.0:
            continue
        emb = np.asarray(backbone.embed([block]), dtype=np.float32)
        if emb.shape != (1, backbone.dim):
            raise ValueError(
                f"backbone {backbone.identifier} returned shape {emb.shape}, expected (1, {backbone.dim})"
            )
        total += seconds * emb[0]
        weight += seconds
    meter.notes.extend(notes)
    quality = meter.result()
    check_audible(quality, meter.peak, path)
    check_speech(quality, min_speech_s, path)
    norm = float(np.linalg.norm(total))
    return (total / max(norm, 1e-12)).astype(np.float32), quality


#: what embedding one clip gave: (embedding, quality, None) or (None, None, why it is unusable)
Outcome = tuple[np.ndarray | None, AudioQuality | None, str | None]


def embed_batch(paths: Sequence[Path], backbone: Backbone, min_speech_s: float = 0.5) -> list[Outcome]:
    """Decode, check and embed one batch of clips (what every executor runs per batch), in input order.

    Decoded audio is sent to the backbone early rather than hold more than ``MAX_PENDING_SAMPLES``.
    """
    outcomes: list[Outcome] = [(None, None, None)] * len(paths)
    pending: list[tuple[int, np.ndarray, AudioQuality]] = []
    n_pending_samples = 0

    def flush() -> None:
        nonlocal n_pending_samples
        n_pending_samples = 0
        if not pending:
            return
        embs = np.asarray(backbone.embed([w for _, w, _ in pending]), dtype=np.float32)
        if embs.shape != (len(pending), backbone.dim):
            raise ValueError(
                f"backbone {backbone.identifier} returned shape {embs.shape}, "
                f"expected ({len(pending)}, {backbone.dim})"
            )
        for (k, _, quality), emb in zip(pending, embs, strict=True):
            outcomes[k] = (emb, quality, None)
        pending.clear()

    for k, path in enumerate(paths):
        try:
            if _duration_hint(path) > LONG_CLIP_S:  # streamed in blocks: memory flat with duration
                emb, quality = embed_long_clip(path, backbone, min_speech_s)
                outcomes[k] = (emb, quality, None)
                continue
            wave, quality = validate(path, min_speech_s)
        except AudioError as exc:
            outcomes[k] = (None, None, exc.reason)
            continue
        if n_pending_samples + len(wave) > MAX_PENDING_SAMPLES:
            flush()  # memory: held audio stays under the budget (or one clip, if longer)
        pending.append((k, wave, quality))
        n_pending_samples += len(wave)
    flush()
    return outcomes


def extract_embeddings(
    paths: Iterable[str | Path],
    backbone: Backbone,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    min_speech_s: float = 0.5,
    batch_size: int = 16,
    executor: Any = None,
) -> ExtractionResult:
    """Embed every clip in ``paths`` with ``backbone``; bad clips are reported and skipped.

    Cached clips are neither decoded nor embedded. Clips to embed are grouped in order of duration,
    ``batch_size`` at a time, so batches hold similar lengths and memory stays bounded. Identical files
    (same bytes) are embedded once. ``executor`` (``srpl_cli.executors``) says where the batches run:
    ``None`` here, in this process; its results are cached by this process as each batch arrives.
    """
    items = [Path(p) for p in paths]
    total = len(items)
    bid = backbone.identifier
    results: dict[int, tuple[np.ndarray, AudioQuality]] = {}
    problems: dict[int, str] = {}
    hashes: dict[int, str] = {}
    todo: list[int] = []
    done = 0
    n_cached = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    for i, path in enumerate(items):
        try:
            check_regular_file(path)  # before hashing: /dev/zero or a FIFO would be read forever
            hashes[i] = file_sha256(path)
        except AudioError as exc:
            problems[i] = exc.reason
            tick()
            continue
        except FileNotFoundError:
            problems[i] = "file not found"
            tick()
            continue
        except OSError as exc:
            problems[i] = f"cannot read file ({exc.strerror or exc})"
            tick()
            continue
        hit = cache.get(hashes[i], bid, backbone.dim) if cache is not None else None
        if hit is not None:
            try:  # the entry was stored under some earlier --min-speech; apply this call's
                check_speech(hit[1], min_speech_s, path)
            except AudioError as exc:
                problems[i] = exc.reason
            else:
                results[i] = hit
                n_cached += 1
            tick()
        else:
            todo.append(i)

    todo.sort(key=lambda i: _duration_hint(items[i]))
    first_of_hash: dict[str, int] = {}
    duplicates: dict[int, int] = {}
    unique: list[int] = []
    for i in todo:  # same bytes as an earlier clip in this run: embedded once
        if hashes[i] in first_of_hash:
            duplicates[i] = first_of_hash[hashes[i]]
        else:
            first_of_hash[hashes[i]] = i
            unique.append(i)
    # fixed batches of similar durations: every executor embeds exactly these groups, so the local and
    # the Ray executor return the same numbers (a backbone's output can depend on its batch's make-up)
    batches = [unique[s : s + batch_size] for s in range(0, len(unique), batch_size)]
    n_embedded = 0
    if executor is None:
        from srpl_cli.executors import LocalExecutor

        executor = LocalExecutor()
    run = executor.map_batches
    for b, outcomes in run([[items[i] for i in batch] for batch in batches], backbone, min_speech_s):
        for i, (emb, quality, reason) in zip(batches[b], outcomes, strict=True):
            if reason is not None:
                problems[i] = reason
                continue
            results[i] = (emb, quality)
            n_embedded += 1
            if cache is not None:
                cache.put(hashes[i], bid, emb, quality)  # as each batch lands: an interrupted run resumes
        tick(len(batches[b]))
    for i, j in duplicates.items():
        if j in results:
            results[i] = results[j]
        else:
            problems[i] = problems[j]
        tick()

    ok = sorted(results)
    dim = backbone.dim
    embeddings = (
        np.stack([results[i][0] for i in ok]).astype(np.float32) if ok else np.zeros((0, dim), np.float32)
    )
    return ExtractionResult(
        embeddings=embeddings,
        paths_ok=[items[i] for i in ok],
        qualities=[results[i][1] for i in ok],
        problems=[(items[i], problems[i]) for i in sorted(problems)],
        backbone_id=bid,
        n_cached=n_cached,
        n_embedded=n_embedded,
        hashes=[hashes[i] for i in ok],
    )
