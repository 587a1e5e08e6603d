"""Audio in: read any file libsndfile reads, make it 16 kHz mono float32, and judge whether it is usable.

Every problem with one clip raises ``AudioError(path, reason)`` so batch commands can report the file
in one line and go on with the others. ``assess`` gives the enrollment feedback commercial SDKs give
(duration, seconds of speech, clipping, level), speech being what ``srpl_cli.vad`` detects (Silero VAD,
offline). ``iter_blocks`` streams a long file in blocks so memory stays flat with its duration.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from srpl_cli._io import atomic_write_bytes
from srpl_cli.errors import AudioError
from srpl_cli.vad import detector_name, speech_frames, speech_regions  # noqa: F401 - speech_frames re-exported

SAMPLE_RATE = 16000
#: Bump when decoding, resampling, down-mixing or windowing changes: it is part of the embedding cache key.
#: v2: windows of long clips no longer overlap (equal split); polarity-inverted stereo no longer cancels.
#: v3: speech measured by silero-vad (quality figures change); float audio far outside [-1, 1] scaled.
AUDIO_PARAMS_VERSION = "3"

SILENT_PEAK = 10 ** (-55.0 / 20)  # a clip whose peak is below -55 dBFS is silent

CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
CLIP_WARN_RATIO = 0.001
SHORT_SPEECH_S = 1.0
LOW_LEVEL_DBFS = -40.0  # mean level of speech frames below this is "low level"
LOW_SPEECH_RATIO = 0.3

_BLOCK_SAMPLES = 1 << 20
#: a float-coded file whose peak exceeds this is scaled to peak 1 (with a warning); up to it, the
#: usual small overshoot of float masters is left alone
OVER_RANGE_PEAK = 2.0
#: decoders that print to stderr themselves (mpg123 for mp3)
_NOISY_DECODER_SUFFIXES = frozenset({".mp3", ".mp2", ".mpeg", ".mpga"})

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


def check_regular_file(path: str | Path) -> Path:
    """``path`` as a ``Path`` if it is a non-empty regular file, else ``AudioError``.

    Checked before anything reads the file: a device (``/dev/zero``) or a FIFO named ``x.wav`` would
    otherwise be read forever by the hashing or the decoder.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except OSError as exc:
        raise AudioError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
        raise AudioError(path, f"not a regular file ({kind})")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def _decode_error(label: object, exc: BaseException) -> AudioError:
    reason = _first_line(exc)
    if "not a regular file" in reason or "does not exist" in reason:
        # libsndfile's words for "no decoder accepted the bytes" (the file was checked to exist)
        reason = "no decoder accepts its contents"
    return AudioError(label, f"unreadable or corrupt audio ({reason})")


def _first_line(exc: BaseException) -> str:
    """libsndfile's reason, without the repr of an in-memory buffer ("Error opening <_io.BytesIO ...>: ")."""
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^Error opening <[^>]*>: ", "", line)


_STDERR_SWAP = threading.Lock()


@contextmanager
def _quiet_decoder(path: Path) -> Iterator[None]:
    """Silence what a C decoder prints straight to file descriptor 2 (mpg123's "Note: Illegal
    Audio-MPEG-Header ..." lines for a corrupt mp3), so a bad file costs one line of srpl's own."""
    if path.suffix.lower() not in _NOISY_DECODER_SUFFIXES:
        yield
        return
    with _STDERR_SWAP:  # fd 2 is the process's: threads (srpl serve) must not interleave swaps
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _open(source: Path | io.BytesIO, label: object = None) -> Any:
    """A soundfile handle on a file or on file bytes held in memory (``label`` names it in errors)."""
    import soundfile as sf

    label = source if label is None else label
    try:
        with _quiet_decoder(Path(str(label))):
            return sf.SoundFile(source if isinstance(source, io.BytesIO) else str(source))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise _decode_error(label, exc) from None


def _read(label: object, fh: Any, frames: int) -> np.ndarray:
    import soundfile as sf

    try:
        with _quiet_decoder(Path(str(label))):
            return fh.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise _decode_error(label, exc) from None


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header (nothing decoded); ``AudioError`` when unreadable."""
    path = check_regular_file(path)
    fh = _open(path)
    try:
        return fh.frames / max(1, fh.samplerate)
    finally:
        fh.close()


def _file_plan(path: Path, fh: Any) -> tuple[int | None, float]:
    """What ``_decode_whole`` decides from the whole file, decided before streaming it: the channel to
    use when the channel mean cancels out (``None``: the mean, see ``downmix``) and the peak of the
    resulting mono signal (1 for integer files, which cannot exceed it). One pass over the file, only
    for multichannel or float files; the handle is left at the start."""
    is_float = fh.subtype in ("FLOAT", "DOUBLE")
    if fh.channels == 1 and not is_float:
        return None, 1.0
    n = 0
    mono_sq, mono_peak = 0.0, 0.0
    channel_sq = np.zeros(fh.channels)
    channel_peak = np.zeros(fh.channels)
    fh.seek(0)
    while True:
        block = _read(path, fh, _BLOCK_SAMPLES // max(1, fh.channels))
        if len(block) == 0:
            break
        if not np.isfinite(block).all():
            raise AudioError(path, "audio contains NaN or infinite samples")
        mono = block.mean(axis=1, dtype=np.float32) if fh.channels > 1 else block[:, 0]
        n += len(block)
        mono_sq += mean_square(mono) * len(block)
        mono_peak = max(mono_peak, float(np.max(np.abs(mono))))
        for c in range(fh.channels):
            channel_sq[c] += mean_square(block[:, c]) * len(block)
            channel_peak[c] = max(channel_peak[c], float(np.max(np.abs(block[:, c]))))
    fh.seek(0)
    channel = None
    if fh.channels > 1 and n and _cancels(mono_sq / n, list(channel_sq / n)):
        channel = int(np.argmax(channel_sq))
    if not is_float:
        return channel, 1.0
    return channel, mono_peak if channel is None else float(channel_peak[channel])


def _scale_note(peak: float) -> str | None:
    if peak > OVER_RANGE_PEAK:
        return f"float samples up to {peak:.3g}, far outside [-1, 1]: scaled down to peak 1"
    return None


def iter_blocks(
    path: str | Path, block_s: float = 60.0, target_sr: int = SAMPLE_RATE, notes: list[str] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream ``path`` as ``(offset, block)``: mono float32 at ``target_sr``, ``offset`` in output samples.

    Memory stays flat with duration (one block plus a little resampling context). The blocks,
    concatenated, equal ``load_audio(path, target_sr)`` to float rounding: each block is resampled
    with enough real neighbouring samples on both sides (zeros only at the file's ends, exactly as a
    whole-file resample pads), and block edges fall on whole periods of the rate ratio. What
    ``load_audio`` decides from the whole file is decided here from the whole file too, in a first pass
    (multichannel or float files only): whether the channel mean cancels out (then the loudest channel
    is used, see ``downmix``) and whether float samples far outside [-1, 1] are scaled to peak 1 (with a
    line added to ``notes``). Raises ``AudioError`` for an unreadable file or NaN/infinite samples.
    """
    path = check_regular_file(path)
    fh = _open(path)
    try:
        yield from _blocks(path, fh, block_s, target_sr, notes)
    finally:
        fh.close()


def _blocks(
    path: Path, fh: Any, block_s: float, target_sr: int, notes: list[str] | None
) -> Iterator[tuple[int, np.ndarray]]:
    sr = int(fh.samplerate)
    g = math.gcd(sr, target_sr)
    up, down = target_sr // g, sr // g  # output samples per `down` input samples
    # torchaudio's sinc kernel reaches `width` (+ one period) input samples beyond its centre
    width = math.ceil(6 * down / (0.99 * min(up, down)))
    context = down * (math.ceil((width + down) / down) + 1) if sr != target_sr else 0
    block = max(down, int(block_s * sr) // down * down)
    channel, peak = _file_plan(path, fh)
    note = _scale_note(peak)
    if note is not None and notes is not None:
        notes.append(note)
    buf = np.zeros(context, dtype=np.float32)  # [context | block | context]: zeros before the start
    eof = False
    offset = 0
    while True:
        while not eof and len(buf) < context + block + context:
            raw = _read(path, fh, block)
            if len(raw) == 0:
                eof = True
                break
            if not np.isfinite(raw).all():
                raise AudioError(path, "audio contains NaN or infinite samples")
            if channel is not None:
                mono = np.ascontiguousarray(raw[:, channel])
            else:
                mono = raw.mean(axis=1, dtype=np.float32) if raw.shape[1] > 1 else raw[:, 0]
            if note is not None:  # as _decode_whole scales
                mono = mono / np.float32(peak)
            buf = np.concatenate((buf, mono.astype(np.float32, copy=False)))
        n_new = min(block, len(buf) - context)
        if n_new <= 0:
            if offset == 0:
                raise AudioError(path, "empty audio (no samples)")
            return
        last = eof and len(buf) - context <= block
        if sr == target_sr:
            out = buf[context : context + n_new].copy()
        else:
            seg = buf[: context + n_new + context]
            if len(seg) < context + n_new + context:
                seg = np.pad(seg, (0, context + n_new + context - len(seg)))
            res = resample(seg, sr, target_sr)
            n_out = math.ceil(n_new * up / down) if last else n_new * up // down
            lead = context * up // down
            out = np.ascontiguousarray(res[lead : lead + n_out])
        yield offset, out
        offset += len(out)
        if last:
            return
        buf = buf[n_new:]


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read ``path`` as float32 mono at ``target_sr`` (channels are averaged, see ``downmix``; any rate is
    resampled; float samples far outside [-1, 1] are scaled to peak 1, see ``load_audio_checked``)."""
    return load_audio_checked(path, target_sr)[0]


def load_audio_checked(path: str | Path, target_sr: int = SAMPLE_RATE) -> tuple[np.ndarray, str | None]:
    """``load_audio`` plus a note when the samples had to be scaled into [-1, 1] (else ``None``)."""
    path = check_regular_file(path)
    return _decode_whole(path, path, target_sr)


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
    return _decode_whole(io.BytesIO(data), label, target_sr)[0]


def probe_audio(data: bytes, label: object = "<upload>") -> tuple[float, str]:
    """(duration in seconds, container format such as "wav") of in-memory audio file bytes, from the
    header only."""
    fh = _open(io.BytesIO(data), label)
    try:
        return fh.frames / max(1, fh.samplerate), str(fh.format).lower()
    finally:
        fh.close()


def check_length(seconds: float, max_seconds: float, label: object) -> None:
    if seconds > max_seconds:
        raise ClipTooLongError(label, f"clip too long: {seconds:.1f} s (at most {max_seconds:g} s per clip)")


def _decode_whole(source: Path | io.BytesIO, label: object, target_sr: int) -> tuple[np.ndarray, str | None]:
    fh = _open(source, label)
    try:
        data = _read(label, fh, -1)
        sr = int(fh.samplerate)
    finally:
        fh.close()
    if data.shape[0] == 0:
        raise AudioError(label, "empty audio (no samples)")
    if not np.isfinite(data).all():
        raise AudioError(label, "audio contains NaN or infinite samples")
    wave = downmix(data) if data.shape[1] > 1 else data[:, 0]
    del data
    peak = float(np.max(np.abs(wave)))
    note = _scale_note(peak)
    if note is not None:
        wave = wave / np.float32(peak)
    return resample(np.ascontiguousarray(wave, dtype=np.float32), sr, target_sr), note


#: the channel mean must keep at least this share of the channels' mean power, else it cancelled
_DOWNMIX_MIN_POWER_RATIO = 0.1


def downmix(data: np.ndarray) -> np.ndarray:
    """(n, channels) -> mono: the channel mean, unless channels cancel out (one polarity-inverted).

    Averaging a channel with its own inverted copy gives silence; in that case (the mean keeps less than
    10 % of the channels' power) the loudest channel is used instead.
    """
    mono = data.mean(axis=1, dtype=np.float32)
    powers = [mean_square(data[:, c]) for c in range(data.shape[1])]
    if _cancels(mean_square(mono), powers):
        return np.ascontiguousarray(data[:, int(np.argmax(powers))])
    return mono


def _cancels(mono_power: float, channel_powers: list[float]) -> bool:
    """The channel mean kept too little of the channels' power: they cancel out."""
    return mono_power < _DOWNMIX_MIN_POWER_RATIO * float(np.mean(channel_powers))


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


class QualityMeter:
    """Quality figures accumulated over consecutive blocks of one clip (a whole clip is one block)."""

    def __init__(self, sr: int = SAMPLE_RATE) -> None:
        self.sr = sr
        self.n = 0
        self.n_speech = 0
        self.n_clipped = 0
        self.sum_sq = 0.0
        self.speech_sum_sq = 0.0
        self.peak = 0.0
        self.notes: list[str] = []

    def add(self, block: np.ndarray, regions: list[tuple[int, int]]) -> None:
        """Count one block and its speech ``regions`` (block-relative sample ranges)."""
        self.n += len(block)
        if len(block) == 0:
            return
        self.sum_sq += mean_square(block) * len(block)
        self.n_clipped += int(_clipped_ratio(block) * len(block) + 0.5)
        self.peak = max(self.peak, float(np.max(np.abs(block))))
        for s, e in regions:
            self.n_speech += e - s
            self.speech_sum_sq += mean_square(block[s:e]) * (e - s)

    def result(self) -> AudioQuality:
        if self.n == 0:
            return AudioQuality(0.0, 0.0, 0.0, 0.0, -120.0, ("empty",))
        duration = self.n / self.sr
        speech_s = self.n_speech / self.sr
        speech_ratio = self.n_speech / self.n
        clipped = self.n_clipped / self.n
        rms_dbfs = 20.0 * np.log10(max(float(np.sqrt(self.sum_sq / self.n)), 1e-6))
        warnings: list[str] = []
        if speech_s < SHORT_SPEECH_S:
            warnings.append(f"short: {speech_s:.1f} s of speech")
        elif speech_ratio < LOW_SPEECH_RATIO:
            warnings.append(f"mostly silence: {100 * speech_ratio:.0f}% speech")
        if clipped >= CLIP_WARN_RATIO:
            warnings.append(f"clipping: {100 * clipped:.1f}% of samples")
        if self.n_speech:
            speech_db = 10.0 * np.log10(max(self.speech_sum_sq / self.n_speech, 1e-12))
            if speech_db < LOW_LEVEL_DBFS:
                warnings.append(f"low level: speech at {speech_db:.0f} dBFS")
        warnings.extend(self.notes)
        return AudioQuality(
            duration_s=round(duration, 3),
            speech_s=round(speech_s, 3),
            speech_ratio=round(speech_ratio, 4),
            clipped_ratio=round(clipped, 6),
            rms_dbfs=round(float(rms_dbfs), 2),
            warnings=tuple(warnings),
        )


def assess(
    wave: np.ndarray, sr: int = SAMPLE_RATE, regions: list[tuple[int, int]] | None = None
) -> AudioQuality:
    """Quality figures of one clip plus warnings (short, mostly silence, clipping, low level).

    Speech is what ``srpl_cli.vad`` detects (``regions``, computed when not given).
    """
    wave = np.asarray(wave, dtype=np.float32)
    meter = QualityMeter(sr)
    meter.add(wave, speech_regions(wave, sr) if regions is None else regions)
    return meter.result()


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
        wave, note = load_audio_checked(path_or_wave, sr)
    else:
        note = None
        label = name if name is not None else "<waveform>"
        wave = np.asarray(path_or_wave, dtype=np.float32)
        if wave.ndim != 1:
            raise AudioError(label, f"expected a mono waveform, got shape {wave.shape}")
        if len(wave) == 0:
            raise AudioError(label, "empty audio (no samples)")
        if not np.isfinite(wave).all():
            raise AudioError(label, "audio contains NaN or infinite samples")
    quality = assess(wave, sr)
    if note is not None:
        quality = replace(quality, warnings=(*quality.warnings, note))
    check_audible(quality, float(np.max(np.abs(wave))), label)
    check_speech(quality, min_speech_s, label)
    return wave, quality


def check_audible(quality: AudioQuality, peak: float, label: object) -> None:
    """``AudioError`` for a silent clip (peak below -55 dBFS) or one in which no speech was detected."""
    if peak < SILENT_PEAK:
        raise AudioError(label, "silent: no audible sound")
    if quality.speech_s == 0.0:
        raise AudioError(label, f"no speech detected (by {detector_name()})")


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
