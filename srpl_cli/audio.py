"""Audio in: read any file libsndfile reads, make it 16 kHz mono float32, and judge whether it is usable.

Every problem with one clip raises ``AudioError(path, reason)`` so batch commands can report the file
in one line and go on with the others. ``assess`` gives the enrollment feedback commercial SDKs give
(duration, share of speech, clipping, level) from a simple frame-energy VAD: no model, no network.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from srpl_cli._io import atomic_write_bytes
from srpl_cli.errors import AudioError

SAMPLE_RATE = 16000
#: Bump when decoding, resampling, down-mixing or windowing changes: it is part of the embedding cache key.
#: v2: windows of long clips no longer overlap (equal split); polarity-inverted stereo no longer cancels.
AUDIO_PARAMS_VERSION = "2"

# Energy VAD: 25 ms frames every 10 ms. A frame is speech when its energy is within VAD_RANGE_DB of the
# clip's loud frames (VAD_REF_PERCENTILE) and above an absolute floor, so quiet clips and pure noise
# floors are both handled.
VAD_FRAME_S = 0.025
VAD_HOP_S = 0.010
VAD_RANGE_DB = 30.0
VAD_REF_PERCENTILE = 95.0
VAD_FLOOR_DBFS = -55.0

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
CLIP_WARN_RATIO = 0.001
SHORT_SPEECH_S = 1.0
LOW_LEVEL_DBFS = -40.0  # mean level of speech frames below this is "low level"
LOW_SPEECH_RATIO = 0.3

_BLOCK_FRAMES = 10_000
_BLOCK_SAMPLES = 1 << 20

#: Long clips are embedded in windows of this length and averaged (bounded memory).
DEFAULT_WINDOW_S = 20.0

_WRITE_FORMATS = {
    ".flac": ("FLAC", "PCM_16"),
    ".wav": ("WAV", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


@dataclass(frozen=True)
class AudioQuality:
    """Per-clip quality figures and human-readable warnings (enrollment feedback)."""

    duration_s: float
    speech_s: float
    speech_ratio: float
    clipped_ratio: float
    rms_dbfs: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        return d


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as float32 mono at ``target_sr`` (channels are averaged, see ``downmix``; any rate is resampled)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return _read(str(path), path, target_sr)


class ClipTooLongError(AudioError):
    """A clip over a duration limit (the server answers 413, not 422)."""


def decode_audio(
    data: bytes, label: object = "<upload>", target_sr: int = SAMPLE_RATE, max_seconds: float | None = None
) -> np.ndarray:
    """Decode audio file bytes held in memory (what ``srpl serve`` receives) exactly as ``load_audio``
    reads the same bytes from disk. With ``max_seconds``, a longer clip is refused from its header,
    before its samples are decoded (a small compressed file can hold hours of audio)."""
    if len(data) == 0:
        raise AudioError(label, "empty file (0 bytes)")
    if max_seconds is not None:
        check_length(probe_audio(data, label)[0], max_seconds, label)
    return _read(io.BytesIO(data), label, target_sr)


def probe_audio(data: bytes, label: object = "<upload>") -> tuple[float, str]:
    """(duration in seconds, container format such as "wav") of in-memory audio file bytes, from the
    header only."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise AudioError(label, f"unreadable or corrupt audio ({_first_line(exc)})") from None
    return info.frames / max(1, info.samplerate), str(info.format).lower()


def check_length(seconds: float, max_seconds: float, label: object) -> None:
    if seconds > max_seconds:
        raise ClipTooLongError(label, f"clip too long: {seconds:.1f} s (at most {max_seconds:g} s per clip)")


def _first_line(exc: BaseException) -> str:
    """libsndfile's reason, without the repr of an in-memory buffer ("Error opening <_io.BytesIO ...>: ")."""
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^Error opening <[^>]*>: ", "", line)


def _read(source: str | io.BytesIO, label: object, target_sr: int) -> np.ndarray:
    import soundfile as sf

    try:
        data, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise AudioError(label, f"unreadable or corrupt audio ({_first_line(exc)})") from None
    if data.shape[0] == 0:
        raise AudioError(label, "empty audio (no samples)")
    if not np.isfinite(data).all():
        raise AudioError(label, "audio contains NaN or infinite samples")
    wave = downmix(data) if data.shape[1] > 1 else data[:, 0]
    return resample(np.ascontiguousarray(wave, dtype=np.float32), int(sr), target_sr)


#: the channel mean must keep at least this share of the channels' mean power, else it cancelled
_DOWNMIX_MIN_POWER_RATIO = 0.1


def downmix(data: np.ndarray) -> np.ndarray:
    """(n, channels) -> mono: the channel mean, unless channels cancel out (one polarity-inverted).

    Averaging a channel with its own inverted copy gives silence; in that case (the mean keeps less than
    10 % of the channels' power) the loudest channel is used instead.
    """
    mono = data.mean(axis=1, dtype=np.float32)
    powers = [mean_square(data[:, c]) for c in range(data.shape[1])]
    if mean_square(mono) < _DOWNMIX_MIN_POWER_RATIO * float(np.mean(powers)):
        return np.ascontiguousarray(data[:, int(np.argmax(powers))])
    return mono


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample with ``torchaudio.functional.resample`` (windowed sinc); no-op when rates match."""
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), orig_sr, target_sr)
    return out.numpy().astype(np.float32, copy=False)


def save_audio(path: str | Path, wave: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write ``wave`` atomically; the format follows the extension (default 16-bit FLAC)."""
    import soundfile as sf

    path = Path(path)
    fmt, subtype = _WRITE_FORMATS.get(path.suffix.lower(), ("FLAC", "PCM_16"))
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(path, f"expected a mono waveform, got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise AudioError(path, "refusing to write NaN or infinite samples")
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format=fmt, subtype=subtype)
    return atomic_write_bytes(path, buf.getvalue())


def frame_energies_db(
    wave: np.ndarray, sr: int = SAMPLE_RATE, frame_s: float = VAD_FRAME_S, hop_s: float = VAD_HOP_S
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


def mean_square(wave: np.ndarray) -> float:
    """Mean of squared samples, accumulated in float64 blocks (no full-length float64 copy)."""
    wave = np.asarray(wave)
    if len(wave) == 0:
        return 0.0
    total = 0.0
    for s in range(0, len(wave), _BLOCK_SAMPLES):
        seg = wave[s : s + _BLOCK_SAMPLES].astype(np.float64)
        total += float(np.dot(seg, seg))
    return total / len(wave)


def _clipped_ratio(wave: np.ndarray) -> float:
    count = 0
    for s in range(0, len(wave), _BLOCK_SAMPLES):
        count += int(np.count_nonzero(np.abs(wave[s : s + _BLOCK_SAMPLES]) >= CLIP_LEVEL))
    return count / max(1, len(wave))


def speech_frames(
    wave: np.ndarray,
    sr: int = SAMPLE_RATE,
    frame_s: float = VAD_FRAME_S,
    hop_s: float = VAD_HOP_S,
    range_db: float = VAD_RANGE_DB,
    floor_dbfs: float = VAD_FLOOR_DBFS,
) -> np.ndarray:
    """Boolean speech flag per frame from the energy VAD (relative to loud frames, absolute floor)."""
    return _flags(frame_energies_db(wave, sr, frame_s, hop_s), range_db, floor_dbfs)


def _flags(
    energies_db: np.ndarray, range_db: float = VAD_RANGE_DB, floor_dbfs: float = VAD_FLOOR_DBFS
) -> np.ndarray:
    ref = float(np.percentile(energies_db, VAD_REF_PERCENTILE))
    return energies_db > max(ref - range_db, floor_dbfs)


def assess(wave: np.ndarray, sr: int = SAMPLE_RATE) -> AudioQuality:
    """Quality figures of one clip plus warnings (short, mostly silence, clipping, low level)."""
    wave = np.asarray(wave, dtype=np.float32)
    duration = len(wave) / sr
    if len(wave) == 0:
        return AudioQuality(0.0, 0.0, 0.0, 0.0, -120.0, ("empty",))
    energies = frame_energies_db(wave, sr)
    flags = _flags(energies)
    speech_s = min(duration, float(flags.sum()) * VAD_HOP_S)
    speech_ratio = speech_s / duration if duration > 0 else 0.0
    clipped = _clipped_ratio(wave)
    rms = float(np.sqrt(mean_square(wave)))
    rms_dbfs = 20.0 * np.log10(max(rms, 1e-6))
    warnings: list[str] = []
    if speech_s < SHORT_SPEECH_S:
        warnings.append(f"short: {speech_s:.1f} s of speech")
    elif speech_ratio < LOW_SPEECH_RATIO:
        warnings.append(f"mostly silence: {100 * speech_ratio:.0f}% speech")
    if clipped >= CLIP_WARN_RATIO:
        warnings.append(f"clipping: {100 * clipped:.1f}% of samples")
    if flags.any():
        speech_db = 10.0 * np.log10(np.mean(10.0 ** (energies[flags] / 10.0)))
        if speech_db < LOW_LEVEL_DBFS:
            warnings.append(f"low level: speech at {speech_db:.0f} dBFS")
    return AudioQuality(
        duration_s=round(duration, 3),
        speech_s=round(speech_s, 3),
        speech_ratio=round(speech_ratio, 4),
        clipped_ratio=round(clipped, 6),
        rms_dbfs=round(float(rms_dbfs), 2),
        warnings=tuple(warnings),
    )


def validate(
    path_or_wave: str | Path | np.ndarray,
    min_speech_s: float = 0.5,
    *,
    sr: int = SAMPLE_RATE,
    name: str | Path | None = None,
) -> tuple[np.ndarray, AudioQuality]:
    """Load (if a path) and check one clip: raises ``AudioError`` for silence or too little speech.

    A waveform must already be mono at ``sr``; ``name`` labels it in error messages.
    """
    if isinstance(path_or_wave, (str, Path, os.PathLike)):
        label: object = path_or_wave
        wave = load_audio(path_or_wave, sr)
    else:
        label = name if name is not None else "<waveform>"
        wave = np.asarray(path_or_wave, dtype=np.float32)
        if wave.ndim != 1:
            raise AudioError(label, f"expected a mono waveform, got shape {wave.shape}")
        if len(wave) == 0:
            raise AudioError(label, "empty audio (no samples)")
        if not np.isfinite(wave).all():
            raise AudioError(label, "audio contains NaN or infinite samples")
    quality = assess(wave, sr)
    peak = float(np.max(np.abs(wave)))
    if peak < 10 ** (VAD_FLOOR_DBFS / 20) or quality.speech_s == 0.0:
        raise AudioError(label, "silent: no speech detected")
    check_speech(quality, min_speech_s, label)
    return wave, quality


def check_speech(quality: AudioQuality, min_speech_s: float, label: object) -> None:
    """Raise ``AudioError`` when ``quality`` has less than ``min_speech_s`` of speech.

    Separate from ``validate`` so clips whose quality comes from the embedding cache get the same check.
    """
    if quality.speech_s < min_speech_s:
        raise AudioError(
            label, f"too little speech: {quality.speech_s:.2f} s (at least {min_speech_s:g} s needed)"
        )


def windows(
    wave: np.ndarray, window_s: float = DEFAULT_WINDOW_S, hop_s: float | None = None, sr: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Yield views of ``wave`` of at most ``window_s`` seconds (with ``hop_s``: full windows every ``hop_s``).

    A clip no longer than one window is yielded whole. By default the clip is split into the fewest
    windows of at most ``window_s`` and equal length (within one sample), so every sample is in exactly
    one window: averaging per-window embeddings weights all audio alike, and there is no tiny tail. With
    ``hop_s`` every window is full length and the last one is aligned to the end of the clip. Views, not
    copies: memory stays bounded by what the caller does with one window.
    """
    size = max(1, int(round(window_s * sr)))
    n = len(wave)
    if n <= size:
        yield wave
        return
    if hop_s is None:
        k = -(-n // size)  # ceil
        bounds = [(i * n) // k for i in range(k + 1)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            yield wave[a:b]
        return
    hop = max(1, int(round(hop_s * sr)))
    start = 0
    while start + size < n:
        yield wave[start : start + size]
        start += hop
    yield wave[n - size :]
