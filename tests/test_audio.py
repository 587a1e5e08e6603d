"""Audio loading, resampling, quality assessment and validation on synthetic and real clips."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from srpl_cli.audio import (
    AudioQuality,
    assess,
    load_audio,
    save_audio,
    speech_frames,
    speech_regions,
    validate,
    windows,
)
from srpl_cli.errors import AudioError, DataError

SR = 16000


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speechlike(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonic signal: loud 'syllables' with short dips, like speech energy."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * env * x + 0.001 * rng.standard_normal(len(t))).astype(np.float32)


def real_speech() -> np.ndarray:
    """A real LibriSpeech read-speech clip (15 s, about 9.5 s of it speech): the detector is a trained
    speech model, so synthetic "speech-like" signals are (rightly) not speech to it."""
    from conftest import shared_path

    clip = sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))[0]
    return load_audio(clip)


def peak_freq(wave: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "atol"),
    [
        (".wav", "WAV", "PCM_16", 1e-4),
        (".wav", "WAV", "PCM_32", 1e-6),
        (".wav", "WAV", "FLOAT", 1e-7),
        (".flac", "FLAC", "PCM_24", 1e-5),
        (".ogg", "OGG", "VORBIS", None),
        (".mp3", "MP3", "MPEG_LAYER_III", None),
    ],
)
def test_each_format_loads(tmp_path: Path, suffix: str, fmt: str, subtype: str, atol: float | None) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} here cannot write {fmt}")
    wave = tone(440, 1.0)
    path = tmp_path / f"clip{suffix}"
    sf.write(path, wave, SR, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    if atol is not None:
        np.testing.assert_allclose(out, wave, atol=atol)
    else:  # lossy codecs: same length (within codec padding) and same pitch
        assert abs(len(out) - len(wave)) < 0.1 * SR
        assert abs(peak_freq(out) - 440) < 5


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampled_to_16k(tmp_path: Path, sr: int) -> None:
    wave = tone(1000, 2.0, sr=sr)
    path = tmp_path / f"tone_{sr}.wav"
    sf.write(path, wave, sr, subtype="PCM_16")
    out = load_audio(path)
    assert abs(len(out) / SR - 2.0) < 1e-3  # duration preserved
    assert abs(peak_freq(out) - 1000) < 2  # frequency preserved


def test_stereo_becomes_mono_mean(tmp_path: Path) -> None:
    left, right = tone(300, 1.0, amp=0.4), tone(700, 1.0, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    out = load_audio(path)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-6)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="file not found") as info:
        load_audio(tmp_path / "nope.wav")
    assert info.value.path == tmp_path / "nope.wav"
    assert isinstance(info.value, DataError) and info.value.exit_code == 3


def test_corrupt_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)) * 4)
    with pytest.raises(AudioError, match="unreadable or corrupt") as info:
        load_audio(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_audio(path)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path)


def test_nan_samples(tmp_path: Path) -> None:
    wave = tone(440, 1.0)
    wave[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path)
    with pytest.raises(AudioError, match="NaN"):
        validate(wave, name="synthetic")


def test_silence_rejected(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(3 * SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="silent"):
        validate(path)
    quiet_noise = (1e-4 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    with pytest.raises(AudioError, match="silent"):
        validate(quiet_noise)


def test_too_little_speech() -> None:
    speech = real_speech()
    start, _ = speech_regions(speech)[0]
    wave = np.zeros(3 * SR, dtype=np.float32)
    wave[SR : SR + int(0.4 * SR)] = speech[start + SR // 2 : start + SR // 2 + int(0.4 * SR)]
    with pytest.raises(AudioError, match="too little speech") as info:
        validate(wave, name="short.wav")
    assert str(info.value).startswith("short.wav:")
    # the same clip passes with a lower minimum, and assess reports it as short
    _, q = validate(wave, min_speech_s=0.2)
    assert 0.3 <= q.speech_s <= 0.55
    assert any(w.startswith("short:") for w in q.warnings)


def test_no_speech_in_loud_non_speech() -> None:
    """A loud tone or loud noise is audible but holds no speech: refused with a reason that says so."""
    with pytest.raises(AudioError, match="no speech detected"):
        validate(tone(440, 3.0), name="tone.wav")
    noise = (0.1 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    with pytest.raises(AudioError, match="no speech detected"):
        validate(noise, name="noise.wav")


def test_assess_good_clip() -> None:
    speech = real_speech()
    wave = np.concatenate([np.zeros(SR, np.float32), speech, np.zeros(SR, np.float32)])
    q = assess(wave)
    assert isinstance(q, AudioQuality)
    assert q.duration_s == pytest.approx(17.0)
    # speech between the pauses of read speech: more than half of the clip, never the padding
    assert 7.0 <= q.speech_s <= 15.0
    assert q.speech_ratio == pytest.approx(q.speech_s / 17.0, abs=1e-3)
    assert q.clipped_ratio == 0.0 and q.warnings == ()
    d = q.to_dict()
    assert d["warnings"] == [] and set(d) >= {"duration_s", "speech_s", "speech_ratio", "rms_dbfs"}


def test_clipping_and_low_level_warnings() -> None:
    speech = real_speech()
    clipped = np.clip(speech * 8, -1.0, 1.0)
    q = assess(clipped)
    assert q.clipped_ratio > 0.01
    assert any(w.startswith("clipping:") for w in q.warnings)
    quiet = speech * 0.01
    assert any(w.startswith("low level") for w in assess(quiet).warnings)


def test_save_audio_roundtrip(tmp_path: Path) -> None:
    wave = tone(440, 1.0)
    path = save_audio(tmp_path / "sub" / "out.flac", wave)
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("FLAC", "PCM_16", SR, 1)
    np.testing.assert_allclose(load_audio(path), wave, atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["out.flac"]  # no temp debris
    save_audio(tmp_path / "out.wav", wave)
    assert sf.info(tmp_path / "out.wav").format == "WAV"
    with pytest.raises(AudioError):
        save_audio(tmp_path / "nan.flac", np.full(10, np.nan, np.float32))


def test_windows_cover_clip() -> None:
    wave = np.arange(int(50.5 * SR), dtype=np.float32)
    parts = list(windows(wave, 20.0))
    assert len(parts) == 3 and all(len(p) <= 20 * SR for p in parts)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1  # equal split, no tiny tail
    # every sample in exactly one window: averaging window embeddings must not double-count audio
    np.testing.assert_array_equal(np.concatenate(parts), wave)
    assert all(np.shares_memory(p, wave) for p in parts)  # views, not copies
    assert len(list(windows(wave[: 5 * SR], 20.0))) == 1
    hopped = list(windows(wave, 20.0, hop_s=10.0))
    assert len(hopped) == 5 and all(len(p) == 20 * SR for p in hopped) and hopped[-1][-1] == wave[-1]


def test_polarity_inverted_stereo_does_not_cancel(tmp_path: Path) -> None:
    """A channel and its inverted copy average to silence; the loudest channel is used instead."""
    left = real_speech()[: 4 * SR]
    path = tmp_path / "inverted.wav"
    sf.write(path, np.stack([left, -0.9 * left], axis=1), SR, subtype="FLOAT")
    out, quality = validate(path)
    np.testing.assert_allclose(out, left, atol=1e-6)
    assert quality.speech_s > 1.0


def test_ten_minute_clip_bounded_memory(tmp_path: Path) -> None:
    """A 10-minute clip is validated and windowed without large extra copies."""
    wave = np.tile(real_speech()[: 10 * SR], 60)
    path = tmp_path / "long.flac"
    sf.write(path, wave, SR, subtype="PCM_16")
    tracemalloc.start()
    loaded, q = validate(path)
    n_windows = sum(1 for _ in windows(loaded, 20.0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert q.duration_s == pytest.approx(600.0, abs=0.01)
    assert n_windows == 30
    # 600 s of float32 is 38 MB; reading + VAD must stay within a few copies of it
    assert peak < 2.5 * loaded.nbytes, peak


def test_real_clip_quality() -> None:
    from conftest import shared_path

    clip = next(iter(sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))))
    wave, q = validate(clip)
    assert q.duration_s == pytest.approx(len(wave) / SR, abs=1e-3)
    assert 0.5 < q.speech_ratio <= 1.0 and q.clipped_ratio < 0.001
    assert speech_frames(wave).dtype == bool


def test_float_wav_far_outside_full_scale_is_scaled_with_a_warning(tmp_path: Path) -> None:
    """Said which: such a clip is scaled to peak 1 (the shape kept) and its quality says so."""
    speech = real_speech()[: 4 * SR]
    loud = 50.0 * speech / np.max(np.abs(speech))
    path = tmp_path / "loud.wav"
    sf.write(path, loud, SR, subtype="FLOAT")
    wave, q = validate(path)
    assert np.max(np.abs(wave)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(wave, loud / 50.0, atol=1e-6)
    assert any("far outside [-1, 1]" in w and "scaled" in w for w in q.warnings)
    # a small float overshoot is left alone
    sf.write(path, 1.5 * speech / np.max(np.abs(speech)), SR, subtype="FLOAT")
    wave, q = validate(path)
    assert np.max(np.abs(wave)) == pytest.approx(1.5, abs=1e-5)
    assert not any("outside" in w for w in q.warnings)
