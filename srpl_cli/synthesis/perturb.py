"""Signal-level voice perturbations: the offline ``perturb`` engine of ``srpl synthesize``.

Two uses (SRPL+ learns from both):

* speaker-specific variation (``VARIATION_PRESETS``): mild combinations that keep the identity, so
  enrollment covers more of how a person can sound (older / younger, excited / sad / angry, a
  different room or microphone);
* pseudo-unknown speakers (``identity_transform``): transforms strong enough to change the identity
  (speed 0.8x / 1.25x, formant warps of 15-20 %, combined pitch and formant shifts). Speed
  perturbation and vocal-tract-length warping are used this way in the speaker-recognition
  literature to create new training identities. One pseudo-unknown = one fixed transform applied to
  the clips of one source speaker, so it behaves like one new person.

Every function is pure: float32 mono waveform in, float32 waveform out, no global state. Randomness
is explicit: the functions that need it take a ``seed`` which ``Transform`` stores in its params, so
the JSON description in the manifest is enough to regenerate a file bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from srpl_cli.errors import UsageError

#: output peak ceiling: anything louder is scaled down to -1 dBFS so nothing ever clips
PEAK_CEILING = 10 ** (-1 / 20)

_N_FFT = 1024
#: formant warping never changes a bin by more than 30 dB
_MAX_LOG_GAIN = math.log(10 ** (30 / 20))
_HOP = 256


def _as_wave(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise UsageError(f"expected a mono waveform (1-D array), got shape {wave.shape}")
    return wave


def _ratio_fraction(ratio: float) -> Fraction:
    """A rational approximation within 0.25 % for ratios 0.75..1.35 (denominator <= 200: still cheap)."""
    return Fraction(ratio).limit_denominator(200)


def _resample_ratio(wave: np.ndarray, ratio: float) -> np.ndarray:
    """Play ``wave`` ``ratio`` times faster (length / ratio, every frequency x ratio)."""
    import torch
    import torchaudio.functional as AF

    frac = _ratio_fraction(ratio)
    if frac == 1:
        return wave.copy()
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), frac.numerator, frac.denominator)
    return out.numpy().astype(np.float32)


def _stft(wave: np.ndarray):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    window = torch.hann_window(_N_FFT)
    return torch.stft(x, _N_FFT, _HOP, window=window, return_complex=True, center=True), window


def _istft(spec, window, length: int) -> np.ndarray:
    import torch

    return torch.istft(spec, _N_FFT, _HOP, window=window, length=length).numpy().astype(np.float32)


def time_stretch(wave: np.ndarray, sr: int, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch: ``rate`` > 1 is faster (shorter); pitch and formants are kept."""
    import torch
    import torchaudio.functional as AF

    wave = _as_wave(wave)
    if rate <= 0:
        raise UsageError(f"tempo factor must be > 0, got {rate}")
    if abs(rate - 1.0) < 1e-9 or wave.size == 0:
        return wave.copy()
    n_out = max(1, int(round(wave.size / rate)))
    padded = _pad_short(wave)
    spec, window = _stft(padded)
    advance = torch.linspace(0, math.pi * _HOP, spec.shape[-2])[..., None]
    stretched = AF.phase_vocoder(spec, rate, advance)
    return _istft(stretched, window, int(round(padded.size / rate)))[:n_out]


def _pad_short(wave: np.ndarray) -> np.ndarray:
    """Zero-pad clips shorter than one STFT frame (the centred STFT needs at least that much)."""
    return np.pad(wave, (0, _N_FFT - wave.size)) if wave.size < _N_FFT else wave


def tempo(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Speak ``factor`` times faster: duration / factor, F0 and formants unchanged."""
    return time_stretch(wave, sr, factor)


def speed(wave: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Resample-based speed change (tape speed): duration / factor, F0 and formants x factor."""
    wave = _as_wave(wave)
    if factor <= 0:
        raise UsageError(f"speed factor must be > 0, got {factor}")
    return _resample_ratio(wave, factor)


def pitch_shift(wave: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Shift F0 (and the whole spectrum) by ``semitones`` keeping the duration.

    Stretch by the pitch ratio, then resample back. Unlike ``torchaudio.functional.pitch_shift``
    this accepts fractional semitones (the ratio is a fraction with denominator <= 200: within 0.3 %).
    """
    wave = _as_wave(wave)
    if semitones == 0 or wave.size == 0:
        return wave.copy()
    frac = _ratio_fraction(2.0 ** (semitones / 12.0))
    ratio = frac.numerator / frac.denominator
    stretched = time_stretch(wave, sr, 1.0 / ratio)
    out = _resample_ratio(stretched, ratio)
    return _fit_length(out, wave.size)


def _fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    if wave.size >= n:
        return wave[:n].astype(np.float32)
    return np.pad(wave, (0, n - wave.size)).astype(np.float32)


def formant_shift(wave: np.ndarray, sr: int, ratio: float, lifter: int = 30) -> np.ndarray:
    """Vocal-tract-length warp: move the spectral envelope along frequency by ``ratio``, keep F0.

    Per STFT frame the envelope is the cepstrally smoothed log magnitude (first ``lifter``
    quefrencies, well below the F0 period at 16 kHz); each frame is multiplied by
    ``env(f / ratio) / env(f)``, so formants move by ``ratio`` while the harmonics (F0) and the phase
    stay. ``ratio`` > 1 sounds like a shorter vocal tract (younger / smaller), < 1 like a longer one.
    """
    import torch

    wave = _as_wave(wave)
    if ratio <= 0:
        raise UsageError(f"formant ratio must be > 0, got {ratio}")
    if abs(ratio - 1.0) < 1e-9 or wave.size == 0:
        return wave.copy()
    spec, window = _stft(_pad_short(wave))
    mag = spec.abs()
    # floor 60 dB under each frame's peak: silent bands must not get a deep envelope whose inverse
    # would amplify numerical noise
    mag = torch.maximum(mag, mag.amax(dim=0, keepdim=True).clamp_min(1e-8) * 1e-3)
    log_mag = torch.log(mag).T  # (frames, bins)
    ceps = torch.fft.irfft(log_mag, n=_N_FFT, dim=-1)
    ceps[:, lifter : _N_FFT - lifter + 1] = 0
    env = torch.fft.rfft(ceps, dim=-1).real  # (frames, bins) log envelope
    n_bins = env.shape[-1]
    src = torch.arange(n_bins, dtype=torch.float32) / ratio  # read the envelope at f / ratio
    lo = src.floor().clamp(0, n_bins - 1).long()
    hi = (lo + 1).clamp(max=n_bins - 1)
    frac = (src - lo.float()).clamp(0, 1)
    warped = env[:, lo] * (1 - frac) + env[:, hi] * frac
    outside = src > n_bins - 1
    warped[:, outside] = env[:, -1:].expand(-1, int(outside.sum()))
    gain = torch.exp((warped - env).clamp(-_MAX_LOG_GAIN, _MAX_LOG_GAIN)).T
    return _istft(spec * gain, window, max(wave.size, _N_FFT))[: wave.size]


def spectral_tilt(wave: np.ndarray, sr: int, db_per_octave: float, ref_hz: float = 1000.0) -> np.ndarray:
    """Tilt the spectrum by ``db_per_octave`` around ``ref_hz`` (negative = darker, breathier voice)."""
    wave = _as_wave(wave)
    if db_per_octave == 0 or wave.size == 0:
        return wave.copy()
    spec = np.fft.rfft(wave.astype(np.float64))
    freqs = np.fft.rfftfreq(wave.size, 1.0 / sr)
    octaves = np.log2(np.maximum(freqs, 50.0) / ref_hz)
    spec *= 10 ** (db_per_octave * octaves / 20)
    return np.fft.irfft(spec, n=wave.size).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, n: int, sr: int, corr_s: float) -> np.ndarray:
    """Unit-variance noise varying on a ``corr_s`` time scale (knots interpolated linearly)."""
    step = max(1, int(corr_s * sr))
    knots = rng.standard_normal(n // step + 2)
    return np.interp(np.arange(n) / step, np.arange(knots.size), knots)


def jitter(wave: np.ndarray, sr: int, amount: float, seed: int, corr_s: float = 0.02) -> np.ndarray:
    """Random micro-variations of F0 (vocal jitter): a time warp whose local rate is 1 + amount * noise.

    ``amount`` is the relative standard deviation of the instantaneous playback rate (0.01 = 1 %);
    the warp is rescaled to keep the total duration.
    """
    wave = _as_wave(wave)
    if amount == 0 or wave.size < 2:
        return wave.copy()
    rng = np.random.default_rng(seed)
    rate = np.clip(1.0 + amount * _smooth_noise(rng, wave.size, sr, corr_s), 0.5, 1.5)
    pos = np.concatenate([[0.0], np.cumsum(rate[:-1])])
    pos *= (wave.size - 1) / pos[-1]
    return np.interp(pos, np.arange(wave.size), wave).astype(np.float32)


def tremolo(wave: np.ndarray, sr: int, rate_hz: float, depth: float) -> np.ndarray:
    """Amplitude modulation at ``rate_hz`` (``depth`` 0..1): the shaky loudness of an agitated voice."""
    wave = _as_wave(wave)
    t = np.arange(wave.size) / sr
    env = 1.0 - depth / 2 + (depth / 2) * np.sin(2 * np.pi * rate_hz * t)
    return (wave * env).astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def make_noise(
    kind: str, n: int, seed: int, babble: Sequence[np.ndarray] | None = None, talkers: int = 4
) -> np.ndarray:
    """White, pink (1/f power) or babble (sum of ``talkers`` other clips) noise of ``n`` samples."""
    rng = np.random.default_rng(seed)
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        return np.fft.irfft(spec / np.sqrt(f), n=n)
    if kind == "babble":
        if not babble:
            raise UsageError("babble noise needs other clips to mix (none given)")
        out = np.zeros(n)
        for i in rng.choice(len(babble), size=min(talkers, len(babble)), replace=False):
            clip = np.asarray(babble[int(i)], dtype=np.float64)
            if clip.size == 0:
                continue
            reps = np.tile(clip, n // clip.size + 2)
            start = int(rng.integers(0, clip.size))
            seg = reps[start : start + n]
            out += seg / math.sqrt(max(_power(seg), 1e-12))
        return out
    raise UsageError(f"unknown noise kind '{kind}'; choose white, pink or babble")


def add_noise(
    wave: np.ndarray,
    sr: int,
    snr_db: float,
    seed: int,
    kind: str = "white",
    babble: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Add noise so that 10 log10(P_signal / P_noise) = ``snr_db`` over the whole clip."""
    wave = _as_wave(wave)
    noise = make_noise(kind, wave.size, seed, babble)
    p_sig, p_noise = _power(wave), _power(noise)
    if p_sig <= 0 or p_noise <= 0:
        return wave.copy()
    noise *= math.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (wave + noise).astype(np.float32)


def synthetic_rir(sr: int, rt60: float, seed: int, direct: float = 1.0) -> np.ndarray:
    """An exponentially decaying noise tail (-60 dB after ``rt60`` s) behind a direct-path impulse."""
    rng = np.random.default_rng(seed)
    n = max(2, int(rt60 * sr))
    t = np.arange(n) / sr
    rir = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)  # ln(1000) = 6.908 -> -60 dB
    rir[: int(0.002 * sr)] = 0.0  # a 2 ms gap before the first reflections
    rir *= 0.3 / math.sqrt(max(np.sum(rir**2), 1e-12))
    rir[0] = direct
    return rir


def reverb(wave: np.ndarray, sr: int, rt60: float, seed: int) -> np.ndarray:
    """Convolve with ``synthetic_rir``; the output keeps the input length and level."""
    wave = _as_wave(wave)
    if rt60 <= 0 or wave.size == 0:
        return wave.copy()
    rir = synthetic_rir(sr, rt60, seed)
    n = wave.size + rir.size - 1
    nfft = 1 << (n - 1).bit_length()
    out = np.fft.irfft(np.fft.rfft(wave, nfft) * np.fft.rfft(rir, nfft), nfft)[: wave.size]
    p_in, p_out = _power(wave), _power(out)
    if p_out > 0:
        out *= math.sqrt(p_in / p_out)
    return out.astype(np.float32)


def limit_peak(wave: np.ndarray, ceiling: float = PEAK_CEILING) -> np.ndarray:
    """Scale down to ``ceiling`` (-1 dBFS) when louder; quieter clips keep their level."""
    wave = np.nan_to_num(_as_wave(wave))
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > ceiling:
        wave = wave * (ceiling / peak)
    return wave.astype(np.float32)


#: name -> function(wave, sr, **params); the params of a ``Transform`` are exactly these kwargs
OPERATIONS: dict[str, Callable[..., np.ndarray]] = {
    "pitch_shift": pitch_shift,
    "tempo": tempo,
    "speed": speed,
    "formant_shift": formant_shift,
    "spectral_tilt": spectral_tilt,
    "jitter": jitter,
    "tremolo": tremolo,
    "add_noise": add_noise,
    "reverb": reverb,
}


@dataclass(frozen=True)
class Transform:
    """One named transform: a list of operation steps, JSON-able for the manifest.

    ``steps`` is a tuple of ``(operation, params)``; ``params`` carry any seed the step needs, so
    ``Transform.from_dict(t.to_dict()).apply(w, sr)`` reproduces ``t.apply(w, sr)`` exactly.
    """

    name: str
    steps: tuple[tuple[str, dict[str, Any]], ...] = field(default_factory=tuple)

    def apply(self, wave: np.ndarray, sr: int, babble: Sequence[np.ndarray] | None = None) -> np.ndarray:
        out = _as_wave(wave)
        for op, params in self.steps:
            try:
                fn = OPERATIONS[op]
            except KeyError:
                raise UsageError(f"unknown perturbation '{op}'; known: {', '.join(OPERATIONS)}") from None
            if op == "add_noise" and params.get("kind") == "babble":
                out = fn(out, sr, babble=babble, **params)
            else:
                out = fn(out, sr, **params)
        return limit_peak(out)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [{"op": op, "params": dict(p)} for op, p in self.steps]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transform:
        return cls(data["name"], tuple((s["op"], dict(s["params"])) for s in data["steps"]))


# --- presets -------------------------------------------------------------------------------------
# Each preset maps an operation to a (low, high) range sampled uniformly per variant. The ranges are
# mild on purpose: at most ~2 semitones, 5 % formant movement and 15 % tempo, which stay within one
# person's natural range, so the variant is still the enrolled speaker.
VARIATION_PRESETS: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    # age: older voices are lower, slower, shakier (jitter) and darker (steeper spectral tilt)
    "older": {
        "pitch_shift": {"semitones": (-2.0, -0.5)},
        "tempo": {"factor": (0.88, 0.97)},
        "jitter": {"amount": (0.004, 0.012)},
        "spectral_tilt": {"db_per_octave": (-2.0, -0.5)},
    },
    "younger": {
        "pitch_shift": {"semitones": (0.5, 2.0)},
        "formant_shift": {"ratio": (1.02, 1.05)},
        "tempo": {"factor": (1.02, 1.10)},
        "spectral_tilt": {"db_per_octave": (0.0, 1.0)},
    },
    # emotion: arousal raises F0, rate and high-frequency energy; sadness lowers all three
    "excited": {
        "pitch_shift": {"semitones": (1.0, 2.5)},
        "tempo": {"factor": (1.05, 1.15)},
        "tremolo": {"rate_hz": (4.0, 7.0), "depth": (0.1, 0.25)},
        "spectral_tilt": {"db_per_octave": (0.5, 2.0)},
    },
    "sad": {
        "pitch_shift": {"semitones": (-1.5, -0.5)},
        "tempo": {"factor": (0.85, 0.95)},
        "spectral_tilt": {"db_per_octave": (-2.5, -1.0)},
    },
    "angry": {
        "pitch_shift": {"semitones": (0.5, 2.0)},
        "tempo": {"factor": (1.03, 1.12)},
        "spectral_tilt": {"db_per_octave": (1.5, 3.0)},
        "jitter": {"amount": (0.003, 0.008)},
    },
    # channel: another room or microphone
    "channel": {
        "add_noise": {"snr_db": (15.0, 30.0)},
        "reverb": {"rt60": (0.2, 0.5)},
    },
}

_SEEDED_OPS = {"jitter", "add_noise", "reverb"}


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _sample_steps(spec: dict[str, dict[str, tuple[float, float]]], rng: np.random.Generator):
    steps = []
    for op, ranges in spec.items():
        params: dict[str, Any] = {k: round(float(rng.uniform(lo, hi)), 4) for k, (lo, hi) in ranges.items()}
        if op in _SEEDED_OPS:
            params["seed"] = _seed(rng)
        if op == "add_noise":
            params["kind"] = str(rng.choice(["white", "pink"]))
        steps.append((op, params))
    return tuple(steps)


def variation_transform(preset: str, rng: np.random.Generator) -> Transform:
    """Sample one identity-keeping transform from ``VARIATION_PRESETS[preset]``."""
    try:
        spec = VARIATION_PRESETS[preset]
    except KeyError:
        raise UsageError(
            f"unknown variation preset '{preset}'; choose: {', '.join(VARIATION_PRESETS)}"
        ) from None
    return Transform(preset, _sample_steps(spec, rng))


#: identity-changing families for pseudo-unknown speakers
IDENTITY_FAMILIES: tuple[str, ...] = ("speed", "formant_up", "formant_down", "cross")


def identity_transform(family: str, rng: np.random.Generator) -> Transform:
    """Sample a transform strong enough to make a new speaker out of an enrolled one.

    * ``speed``: tape speed 0.8x or 1.25x (+-4 semitones and +-20-25 % formants, with the tempo);
    * ``formant_up`` / ``formant_down``: formant warp of 15-20 % with a 3-5 semitone F0 shift in the
      same direction (a different vocal tract and larynx, the duration kept);
    * ``cross``: formants and F0 moved in opposite directions (a voice no simple scaling maps back).
    """
    up = bool(rng.integers(0, 2))
    if family == "speed":
        steps: tuple = (("speed", {"factor": 1.25 if up else 0.8}),)
    elif family in ("formant_up", "formant_down"):
        sign = 1 if family == "formant_up" else -1
        ratio = 1 + sign * float(rng.uniform(0.15, 0.20))
        steps = (
            ("formant_shift", {"ratio": round(ratio, 4)}),
            ("pitch_shift", {"semitones": round(sign * float(rng.uniform(3.0, 5.0)), 4)}),
        )
    elif family == "cross":
        sign = 1 if up else -1
        steps = (
            ("formant_shift", {"ratio": round(1 + sign * float(rng.uniform(0.12, 0.18)), 4)}),
            ("pitch_shift", {"semitones": round(-sign * float(rng.uniform(3.0, 5.0)), 4)}),
        )
    else:
        raise UsageError(f"unknown identity family '{family}'; choose: {', '.join(IDENTITY_FAMILIES)}")
    return Transform(f"pseudo_{family}", steps)
