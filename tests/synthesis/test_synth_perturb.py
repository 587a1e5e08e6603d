"""The perturb engine's transforms do what they say: measured F0, duration, SNR, peak, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path

from srpl_cli.synthesis import perturb as P

SR = 16000


def f0_median(wave: np.ndarray, sr: int = SR, fmin: float = 60.0, fmax: float = 500.0) -> float:
    """Median autocorrelation F0 over the loud, clearly periodic 40 ms frames."""
    n, hop = int(0.04 * sr), int(0.01 * sr)
    lo, hi = int(sr / fmax), int(sr / fmin)
    starts = range(0, len(wave) - n, hop)
    energy = np.array([np.mean(wave[i : i + n] ** 2) for i in starts])
    out = []
    for e, i in zip(energy, starts, strict=True):
        if e < 0.1 * energy.max():
            continue
        x = wave[i : i + n] - wave[i : i + n].mean()
        ac = np.correlate(x, x, "full")[n - 1 :]
        ac = ac / ac[0]
        k = int(np.argmax(ac[lo:hi])) + lo
        if ac[k] < 0.5:
            continue
        a, b, c = ac[k - 1], ac[k], ac[k + 1]
        out.append(sr / (k + 0.5 * (a - c) / (a - 2 * b + c)))
    return float(np.median(out))


@pytest.fixture(scope="module")
def tone() -> np.ndarray:
    t = np.arange(int(1.5 * SR)) / SR
    return sum(0.3 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from srpl_cli.audio import load_audio

    folder = shared_path("librispeech-mini", "speakers", "1688")
    return load_audio(sorted(folder.glob("*.flac"))[0])


@pytest.mark.parametrize("semitones", [-3.0, 2.5, 4.0])
def test_pitch_shift_moves_f0_by_the_ratio_on_a_tone(tone: np.ndarray, semitones: float) -> None:
    out = P.pitch_shift(tone, SR, semitones)
    assert out.shape == tone.shape
    assert f0_median(out) / f0_median(tone) == pytest.approx(2 ** (semitones / 12), rel=0.02)


@pytest.mark.parametrize("semitones", [-3.0, 4.0])
def test_pitch_shift_moves_f0_by_the_ratio_on_real_speech(speech: np.ndarray, semitones: float) -> None:
    out = P.pitch_shift(speech, SR, semitones)
    assert len(out) == len(speech)
    assert f0_median(out) / f0_median(speech) == pytest.approx(2 ** (semitones / 12), rel=0.05)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_tempo_changes_duration_and_keeps_f0(tone: np.ndarray, factor: float) -> None:
    out = P.tempo(tone, SR, factor)
    assert len(tone) / len(out) == pytest.approx(factor, rel=0.01)
    assert f0_median(out) == pytest.approx(f0_median(tone), rel=0.02)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_changes_duration_and_f0(tone: np.ndarray, speech: np.ndarray, factor: float) -> None:
    out = P.speed(tone, SR, factor)
    assert len(tone) / len(out) == pytest.approx(factor, rel=0.01)
    assert f0_median(out) / f0_median(tone) == pytest.approx(factor, rel=0.02)
    real = P.speed(speech, SR, factor)
    assert len(speech) / len(real) == pytest.approx(factor, rel=0.01)
    assert f0_median(real) / f0_median(speech) == pytest.approx(factor, rel=0.05)


def test_formant_shift_moves_the_envelope_and_keeps_f0(tone: np.ndarray) -> None:
    # source-filter test signal: 100 Hz harmonics under one formant-like bump at 1 kHz
    t = np.arange(int(1.5 * SR)) / SR
    amps = np.exp(-0.5 * ((np.arange(1, 80) * 100 - 1000) / 250.0) ** 2) + 0.01
    vowel = sum(a * np.sin(2 * np.pi * 100 * k * t) for k, a in enumerate(amps, start=1))
    vowel = (0.5 * vowel / np.abs(vowel).max()).astype(np.float32)

    def centroid(w: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(w)) ** 2
        f = np.fft.rfftfreq(len(w), 1 / SR)
        band = f < 3000
        return float((power[band] * f[band]).sum() / power[band].sum())

    for ratio in (0.82, 1.18):
        out = P.formant_shift(vowel, SR, ratio)
        assert out.shape == vowel.shape
        assert centroid(out) / centroid(vowel) == pytest.approx(ratio, rel=0.04)
        assert f0_median(out) == pytest.approx(100.0, rel=0.02)
    assert f0_median(P.formant_shift(tone, SR, 1.2)) == pytest.approx(f0_median(tone), rel=0.02)


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_at_snr(tone: np.ndarray, snr: float, kind: str) -> None:
    babble = [np.roll(tone, 100 * k) * (k + 1) for k in range(5)]
    out = P.add_noise(tone, SR, snr, seed=3, kind=kind, babble=babble)
    noise = out - tone
    measured = 10 * np.log10(np.mean(tone.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert measured == pytest.approx(snr, abs=0.1)


def test_other_transforms_keep_length_and_are_finite(tone: np.ndarray) -> None:
    for out in (
        P.spectral_tilt(tone, SR, -3.0),
        P.jitter(tone, SR, 0.01, seed=1),
        P.tremolo(tone, SR, 5.0, 0.3),
        P.reverb(tone, SR, 0.4, seed=1),
    ):
        assert out.shape == tone.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert f0_median(P.jitter(tone, SR, 0.01, seed=1)) == pytest.approx(150, rel=0.03)


def test_nothing_clips_even_from_a_loud_input(tone: np.ndarray) -> None:
    loud = tone[: SR // 2] / np.abs(tone).max() * 0.999
    rng = np.random.default_rng(0)
    transforms = [P.variation_transform(p, rng) for p in P.VARIATION_PRESETS]
    transforms += [P.identity_transform(f, rng) for f in P.IDENTITY_FAMILIES]
    transforms.append(P.Transform("hot", (("add_noise", {"snr_db": -5.0, "seed": 1, "kind": "white"}),)))
    for t in transforms:
        out = t.apply(loud, SR)
        assert np.abs(out).max() <= P.PEAK_CEILING + 1e-6, t.name
        assert np.isfinite(out).all()


def test_transform_is_seeded_and_json_roundtrips(tone: np.ndarray) -> None:
    a = P.variation_transform("channel", np.random.default_rng(5))
    b = P.variation_transform("channel", np.random.default_rng(5))
    c = P.variation_transform("channel", np.random.default_rng(6))
    assert a == b and a != c
    again = P.Transform.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_array_equal(again.apply(tone, SR), a.apply(tone, SR))
    assert not np.array_equal(c.apply(tone, SR), a.apply(tone, SR))


def test_bad_parameters_are_usage_errors(tone: np.ndarray) -> None:
    from srpl_cli.errors import UsageError

    with pytest.raises(UsageError):
        P.speed(tone, SR, 0.0)
    with pytest.raises(UsageError):
        P.variation_transform("ancient", np.random.default_rng(0))
    with pytest.raises(UsageError):
        P.Transform("x", (("explode", {}),)).apply(tone, SR)
    with pytest.raises(UsageError):
        P.pitch_shift(np.zeros((2, 10), np.float32), SR, 1.0)


def test_very_short_clips_survive_every_transform() -> None:
    short = np.random.default_rng(0).standard_normal(300).astype(np.float32) * 0.1
    rng = np.random.default_rng(1)
    for t in [P.variation_transform(p, rng) for p in P.VARIATION_PRESETS] + [
        P.identity_transform(f, rng) for f in P.IDENTITY_FAMILIES
    ]:
        out = t.apply(short, SR)
        assert out.ndim == 1 and out.size > 0 and np.isfinite(out).all(), t.name


def test_pitch_ratio_is_within_documented_precision() -> None:
    """The rational resampling ratio stays within 0.3 % of 2^(s/12) (denominator 24 was off by 2 %)."""
    for s in np.arange(-5.0, 5.0, 0.01):
        frac = P._ratio_fraction(2.0 ** (s / 12.0))
        assert float(frac) / 2.0 ** (s / 12.0) == pytest.approx(1.0, abs=0.003), s


@pytest.mark.parametrize("semitones", [-0.5, -0.3645, 0.7])
def test_small_pitch_shifts_are_accurate(tone: np.ndarray, semitones: float) -> None:
    out = P.pitch_shift(tone, SR, semitones)
    assert f0_median(out) / f0_median(tone) == pytest.approx(2 ** (semitones / 12), rel=0.004)
