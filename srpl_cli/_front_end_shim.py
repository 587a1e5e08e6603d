"""TEMPORARY stand-in for the front-end issue's ``srpl_cli.vad`` / ``audio.iter_blocks`` (helper h10).

Same API, simplest implementation (energy VAD, soundfile blocks). Removed when that branch is merged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from srpl_cli.audio import SAMPLE_RATE, downmix, resample, speech_frames


def detector_name() -> str:
    return "energy-shim"


def speech_regions(wave: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    if len(wave) == 0:
        return []
    hop = int(0.01 * sr)
    flags = speech_frames(wave, sr)
    regions: list[tuple[int, int]] = []
    start = None
    silence = 0
    for i, f in enumerate(flags):
        if f:
            if start is None:
                start = i
            silence = 0
        elif start is not None:
            silence += 1
            if silence >= 30:
                regions.append((start * hop, (i - silence + 1) * hop + int(0.025 * sr)))
                start = None
                silence = 0
    if start is not None:
        regions.append((start * hop, len(wave)))
    return [(a, min(b, len(wave))) for a, b in regions if b - a >= int(0.2 * sr)]


def iter_blocks(path, block_s: float = 60.0, target_sr: int = SAMPLE_RATE) -> Iterator[tuple[int, np.ndarray]]:
    import soundfile as sf

    info = sf.info(str(path))
    offset = 0
    for data in sf.blocks(str(path), blocksize=int(block_s * info.samplerate), dtype="float32", always_2d=True):
        wave = downmix(data) if data.shape[1] > 1 else data[:, 0]
        wave = resample(np.ascontiguousarray(wave), info.samplerate, target_sr)
        yield offset, wave
        offset += len(wave)


def audio_duration(path: str | Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate
