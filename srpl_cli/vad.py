"""Speech detection: where in a waveform someone speaks.

The detector is Silero VAD (``silero-vad`` on PyPI, MIT), a trained model whose weights ship inside
its wheel, so it runs offline. Of the three forms the wheel holds we use the "sequence" ONNX model
(``silero_vad_16k_sequence.onnx``): it computes the same per-frame probabilities as the streaming
JIT and ONNX models (identical speech regions on 60 s of LibriSpeech) but in one onnxruntime call per
16 s block instead of one Python call per 32 ms frame: 0.18 s for 60 s of audio against 0.32 s
(streaming ONNX) and 0.90 s (JIT) on this project's 2-core machine, it loads in 0.02 s, and it needs
no torch. It runs on one onnxruntime thread, so it never competes with the backbone's torch threads.
Frame probabilities become regions with silero's own ``get_speech_timestamps_from_probs`` and its
defaults (threshold 0.5, speech >= 250 ms, gaps < 100 ms bridged, 30 ms padding).

When the model cannot be loaded (``onnxruntime`` or ``silero-vad`` missing, a broken install) or
``SRPL_VAD=energy`` is set, a frame-energy detector is used instead (logged once): a 25 ms frame
every 10 ms is speech when its energy is within 30 dB of the clip's loud frames (95th percentile)
and above -55 dBFS. It finds pauses well but calls soft, breathy speech silence, which is why it is
only the fallback. ``detector_name()`` says which is in use; it is part of the embedding cache key.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

VAD_SAMPLE_RATE = 16000
#: environment variable: ``energy`` forces the fallback detector (tests, or a platform without onnxruntime)
ENV_DETECTOR = "SRPL_VAD"

# Energy fallback: 25 ms frames every 10 ms, speech within RANGE_DB of the loud frames, above a floor.
ENERGY_FRAME_S = 0.025
ENERGY_HOP_S = 0.010
ENERGY_RANGE_DB = 30.0
ENERGY_REF_PERCENTILE = 95.0
ENERGY_FLOOR_DBFS = -55.0
_BLOCK_FRAMES = 10_000

_lock = threading.Lock()
_model: Any = None
_loaded = False
_failure: str | None = None


def _forced_energy() -> bool:
    return os.environ.get(ENV_DETECTOR, "").strip().lower() == "energy"


def _load_silero() -> Any:
    """The sequence ONNX model, loaded once per process (``None`` when it cannot be loaded or
    ``SRPL_VAD=energy``, which is read on every call)."""
    global _model, _loaded, _failure
    if _forced_energy():
        return None
    with _lock:
        if _loaded:
            return _model
        _loaded = True
        try:
            _model = _import_silero_sequence()
        except Exception as exc:  # noqa: BLE001 - any failure to load means "use the fallback"
            _failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
            logger.warning("silero-vad unavailable (%s): using the energy speech detector", _failure)
            _model = None
        return _model


def _import_silero_sequence() -> Any:
    # silero_vad's package import runs ``torch.set_num_threads(1)`` (silero_vad/model.py); undo that so
    # the thread count the user chose for the backbone is kept.
    import sys

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        with warnings.catch_warnings():  # its loader uses the deprecated importlib.resources.path
            warnings.simplefilter("ignore", DeprecationWarning)
            from silero_vad import load_silero_vad

            return load_silero_vad(sequence=True)
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def detector_name() -> str:
    """``"silero-vad X.Y.Z"`` or ``"energy"`` (fallback in use): part of cache keys."""
    if _load_silero() is None:
        return "energy"
    return _silero_label()


@functools.lru_cache(maxsize=1)
def _silero_label() -> str:
    """Read once: cache keys ask for it several times per clip."""
    try:
        return f"silero-vad {version('silero-vad')}"
    except PackageNotFoundError:
        return "silero-vad"


def fallback_reason() -> str | None:
    """Why the energy detector is in use (``None`` when silero-vad is)."""
    if _forced_energy():
        return f"{ENV_DETECTOR}=energy"
    _load_silero()
    return _failure


def speech_regions(wave: np.ndarray, sr: int = VAD_SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sorted, non-overlapping ``[start, end)`` sample ranges (at ``sr``) of speech in a mono waveform."""
    wave = np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)
    if len(wave) == 0 or not np.any(wave):
        return []
    model = _load_silero()
    if model is None:
        return energy_regions(wave, sr)
    x = wave
    if sr != VAD_SAMPLE_RATE:
        from srpl_cli.audio import resample

        x = resample(wave, sr, VAD_SAMPLE_RATE)
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    probs = model.audio_forward(x, sampling_rate=VAD_SAMPLE_RATE)
    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=VAD_SAMPLE_RATE, audio_length_samples=len(x)
    )
    scale = sr / VAD_SAMPLE_RATE
    regions = [
        (min(len(wave), int(round(s["start"] * scale))), min(len(wave), int(round(s["end"] * scale))))
        for s in stamps
    ]
    return _merge(regions)


def speech_seconds(regions: list[tuple[int, int]], sr: int = VAD_SAMPLE_RATE) -> float:
    """Total duration of ``regions`` in seconds."""
    return sum(e - s for s, e in regions) / sr


def regions_mask(regions: list[tuple[int, int]], n: int) -> np.ndarray:
    """Boolean per-sample mask of ``regions`` over ``n`` samples."""
    mask = np.zeros(n, dtype=bool)
    for s, e in regions:
        mask[s:e] = True
    return mask


def _merge(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(r for r in regions if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


# -- energy fallback ---------------------------------------------------------------------------------


def frame_energies_db(
    wave: np.ndarray, sr: int = VAD_SAMPLE_RATE, frame_s: float = ENERGY_FRAME_S, hop_s: float = ENERGY_HOP_S
) -> np.ndarray:
    """Mean-square energy in dBFS of each frame (a short clip gives one frame)."""
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, int(round(hop_s * sr)))
    wave = np.asarray(wave)
    if len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    n = 1 + (len(wave) - frame) // hop
    out = np.empty(n, dtype=np.float64)
    # cumulative sums give every frame's energy without materialising the frames; done in blocks of
    # frames so a 10-minute clip needs a few MB of scratch, not several copies of the clip
    for s in range(0, n, _BLOCK_FRAMES):
        e = min(n, s + _BLOCK_FRAMES)
        seg = wave[s * hop : (e - 1) * hop + frame].astype(np.float64)
        c = np.concatenate(([0.0], np.cumsum(seg * seg)))
        starts = np.arange(e - s) * hop
        out[s:e] = (c[starts + frame] - c[starts]) / frame
    return 10.0 * np.log10(np.maximum(out, 1e-12))


def energy_flags(
    energies_db: np.ndarray, range_db: float = ENERGY_RANGE_DB, floor_dbfs: float = ENERGY_FLOOR_DBFS
) -> np.ndarray:
    """Speech flag per frame: within ``range_db`` of the loud frames and above ``floor_dbfs``."""
    ref = float(np.percentile(energies_db, ENERGY_REF_PERCENTILE))
    return energies_db > max(ref - range_db, floor_dbfs)


def speech_frames(
    wave: np.ndarray,
    sr: int = VAD_SAMPLE_RATE,
    frame_s: float = ENERGY_FRAME_S,
    hop_s: float = ENERGY_HOP_S,
    range_db: float = ENERGY_RANGE_DB,
    floor_dbfs: float = ENERGY_FLOOR_DBFS,
) -> np.ndarray:
    """Boolean speech flag per frame from the energy detector."""
    return energy_flags(frame_energies_db(wave, sr, frame_s, hop_s), range_db, floor_dbfs)


def energy_regions(wave: np.ndarray, sr: int = VAD_SAMPLE_RATE) -> list[tuple[int, int]]:
    """Speech regions from the energy detector: runs of speech frames, each frame ``[i*hop, i*hop+frame)``."""
    frame = max(1, int(round(ENERGY_FRAME_S * sr)))
    hop = max(1, int(round(ENERGY_HOP_S * sr)))
    flags = speech_frames(wave, sr)
    if not flags.any():
        return []
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive frame index
    n = len(wave)
    return _merge(
        [(int(a) * hop, min(n, (int(b) - 1) * hop + frame)) for a, b in zip(starts, ends, strict=True)]
    )
