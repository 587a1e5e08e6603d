"""Speech detection (silero-vad with the energy fallback) and streamed reading of long files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from srpl_cli import vad
from srpl_cli.audio import audio_duration, iter_blocks, load_audio, resample
from srpl_cli.errors import AudioError

SR = 16000


def real_speech() -> np.ndarray:
    from conftest import shared_path

    return load_audio(sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))[0])


def test_regions_are_sorted_disjoint_and_inside_the_clip() -> None:
    speech = real_speech()
    wave = np.concatenate([np.zeros(2 * SR, np.float32), speech, np.zeros(2 * SR, np.float32)])
    regions = vad.speech_regions(wave)
    assert regions and all(isinstance(a, int) and isinstance(b, int) for a, b in regions)
    assert all(0 <= a < b <= len(wave) for a, b in regions)
    assert all(b1 < a2 for (_, b1), (a2, _) in zip(regions[:-1], regions[1:], strict=True))
    # the two seconds of digital silence each side are never speech
    assert regions[0][0] >= 2 * SR - 0.05 * SR and regions[-1][1] <= len(wave) - 2 * SR + 0.05 * SR
    assert 7.0 < vad.speech_seconds(regions) < 15.0
    assert vad.detector_name().startswith("silero-vad ")


def test_other_rates_map_back_to_their_own_samples() -> None:
    speech = real_speech()[: 6 * SR]
    at16 = vad.speech_regions(speech)
    at8 = vad.speech_regions(resample(speech, SR, 8000), 8000)
    assert len(at8) == len(at16)
    for (a8, b8), (a16, b16) in zip(at8, at16, strict=True):
        assert abs(2 * a8 - a16) <= 0.04 * SR and abs(2 * b8 - b16) <= 0.04 * SR


def test_silence_tone_and_empty_hold_no_speech() -> None:
    assert vad.speech_regions(np.zeros(SR, np.float32)) == []
    assert vad.speech_regions(np.zeros(0, np.float32)) == []
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * SR) / SR)).astype(np.float32)
    assert vad.speech_regions(tone) == []


def test_energy_fallback_is_named_and_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vad.ENV_DETECTOR, "energy")
    assert vad.detector_name() == "energy"
    assert vad.fallback_reason() == "SRPL_VAD=energy"
    wave = np.zeros(3 * SR, np.float32)
    wave[SR : 2 * SR] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(SR) / SR)
    regions = vad.speech_regions(wave)
    assert len(regions) == 1
    a, b = regions[0]
    assert abs(a - SR) <= 0.03 * SR and abs(b - 2 * SR) <= 0.03 * SR
    monkeypatch.delenv(vad.ENV_DETECTOR)
    assert vad.detector_name().startswith("silero-vad")


def test_loading_the_model_keeps_the_torch_thread_count() -> None:
    """silero_vad's import calls torch.set_num_threads(1); the user's choice must survive it."""
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(2); from srpl_cli import vad; import numpy as np;"
        "vad.speech_regions(np.ones(16000, np.float32) * 0.1); print(torch.get_num_threads(), vad.detector_name())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    threads, name = out.stdout.split(maxsplit=1)
    assert threads == "2" and name.startswith("silero-vad")


@pytest.mark.parametrize(("sr", "channels"), [(16000, 1), (44100, 2), (8000, 1), (22050, 1)])
def test_iter_blocks_equals_whole_file_read(tmp_path: Path, sr: int, channels: int) -> None:
    rng = np.random.default_rng(sr)
    data = (0.1 * rng.standard_normal((sr * 5 + 77, channels))).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, data, sr, subtype="FLOAT")
    blocks = list(iter_blocks(path, block_s=1.3))
    whole = load_audio(path)
    assert len(blocks) == 4
    offsets = [o for o, _ in blocks]
    assert offsets == list(np.cumsum([0] + [len(b) for _, b in blocks[:-1]]))
    joined = np.concatenate([b for _, b in blocks])
    assert joined.dtype == np.float32 and len(joined) == len(whole)
    np.testing.assert_allclose(joined, whole, atol=1e-6)  # no seams at block edges
    assert audio_duration(path) == pytest.approx((sr * 5 + 77) / sr)


@pytest.mark.parametrize("channels", [1, 2])
def test_iter_blocks_decides_scaling_and_mixdown_once_per_file(tmp_path: Path, channels: int) -> None:
    """A float file quiet, then far beyond full scale; in stereo, its quiet part anti-phase (the channel
    mean cancels there, not over the file): blocks give the same samples as the whole-file read."""
    rng = np.random.default_rng(channels)
    n = 6 * SR
    mono = (0.1 * rng.standard_normal(n)).astype(np.float32)
    mono[n // 2 :] *= 40.0  # the loud half: peak far above 2, so the file is scaled down
    if channels == 1:
        data = mono[:, None]
    else:
        right = mono.copy()
        right[: n // 3] *= -1.0  # anti-phase in the first blocks only
        data = np.stack([mono, right], axis=1)
    path = tmp_path / "x.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    notes: list[str] = []
    joined = np.concatenate([b for _, b in iter_blocks(path, block_s=1.0, notes=notes)])
    whole = load_audio(path)
    np.testing.assert_array_equal(joined, whole)  # same rate: no resampling, so exactly the same
    assert len(notes) == 1 and "scaled down to peak 1" in notes[0]


def test_iter_blocks_refuses_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        list(iter_blocks(empty))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="unreadable"):
        list(iter_blocks(junk))
    with pytest.raises(AudioError, match="not a regular file"):
        list(iter_blocks(tmp_path))


def test_soft_and_sad_emodb_sentences_are_never_refused() -> None:
    """The issue's "done when": no clip with >= 1 s of audible speech is refused. emodb's sadness and
    boredom sentences (the softest delivery) all pass the default rule with room to spare."""
    from conftest import shared_path

    from srpl_cli.audio import validate

    clips = sorted(p for p in shared_path("emodb").glob("*/*.flac") if p.stem[5] in "TL")
    assert len(clips) > 100
    least = min(validate(c)[1].speech_s for c in clips)  # raises AudioError on a refusal
    assert least >= 0.9
