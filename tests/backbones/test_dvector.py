"""The GE2E d-vector backbone with the real weights from the resemblyzer wheel."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from srpl_cli.audio import load_audio
from srpl_cli.backbones import get_backbone
from srpl_cli.backbones.dvector import DVectorBackbone, packaged_weights, partial_starts, preprocess
from srpl_cli.errors import ModelUnavailableError

SR = 16000


@pytest.fixture(scope="module")
def backbone() -> DVectorBackbone:
    if packaged_weights() is None:
        pytest.skip("resemblyzer (which ships the d-vector weights) is not installed")
    return DVectorBackbone.load(device="cpu")


def test_loads_without_importing_resemblyzer(backbone: DVectorBackbone) -> None:
    assert "resemblyzer" not in sys.modules
    ident = backbone.identifier
    assert ident.startswith("dvector:resemblyzer-0.") and len(ident.split(":")[2]) == 12  # weights hash
    assert backbone.dim == 256 and backbone.name == "dvector"
    via_registry = get_backbone("dvector", device="cpu")
    assert via_registry.identifier == ident


def test_explicit_source_file_and_folder(tmp_path: Path, backbone: DVectorBackbone) -> None:
    weights = packaged_weights()
    assert weights is not None
    assert DVectorBackbone.load(weights, device="cpu").identifier == backbone.identifier
    assert DVectorBackbone.load(weights.parent, device="cpu").identifier == backbone.identifier
    with pytest.raises(ModelUnavailableError, match="not found"):
        DVectorBackbone.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="not a readable"):
        DVectorBackbone.load(bad)


def test_mel_matches_librosa(backbone: DVectorBackbone) -> None:
    """resemblyzer's wav_to_mel_spectrogram is librosa's melspectrogram with these settings."""
    librosa = pytest.importorskip("librosa")
    wave = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(y=wave, sr=SR, n_fft=400, hop_length=160, n_mels=40).T
    ours = backbone.mel_frames(wave).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


def test_partial_slices_follow_resemblyzer() -> None:
    # 1.6 s partials every 0.77 s (12320 samples -> step 77 frames); last one dropped if < 75 % covered
    assert partial_starts(8000) == [0]
    assert partial_starts(16000 * 2) == [0, 77]
    assert partial_starts(16000 * 3) == [0, 77, 154]
    assert partial_starts(16000 * 10)[-1] + 160 <= 16000 * 10 / 160 + 160 * 0.25 + 1


def test_embeddings_shape_norm_and_batch_independence(backbone: DVectorBackbone) -> None:
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.05 for n in (8000, 3 * SR, 5 * SR)]
    batch = backbone.embed(waves)
    assert batch.shape == (3, 256) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    single = np.vstack([backbone.embed([w]) for w in waves])
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_silence_does_not_give_nan(backbone: DVectorBackbone) -> None:
    out = backbone.embed([np.zeros(SR, dtype=np.float32)])
    assert np.isfinite(out).all()


def test_long_clip_windows_close_to_whole(backbone: DVectorBackbone) -> None:
    from conftest import shared_path

    clips = sorted(shared_path("librispeech-mini", "speakers").glob("1688/*.flac"))[:6]
    long = np.concatenate([load_audio(c) for c in clips])
    assert len(long) > 40 * SR
    windowed = backbone.embed([long])[0]
    whole = DVectorBackbone(backbone._encoder, "cpu", backbone.identifier, window_s=1e9).embed([long])[0]
    assert float(windowed @ whole) > 0.99


def test_same_speaker_closer_than_different(backbone: DVectorBackbone) -> None:
    from conftest import shared_path

    root = shared_path("librispeech-mini", "speakers")
    speakers = sorted(p for p in root.iterdir() if p.is_dir())[:4]
    paths, labels = [], []
    for i, spk in enumerate(speakers):
        for clip in sorted(spk.glob("*.flac"))[:3]:
            paths.append(clip)
            labels.append(i)
    emb = backbone.embed([load_audio(p) for p in paths])
    sims = emb @ emb.T
    y = np.array(labels)
    same = sims[(y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)]
    diff = sims[y[:, None] != y[None, :]]
    assert same.mean() > diff.mean() + 0.1
    # nearest other clip is from the same speaker for (almost) every clip
    np.fill_diagonal(sims, -1)
    assert (y[sims.argmax(1)] == y).mean() >= 0.9


def test_preprocess_trims_long_silence() -> None:
    from conftest import shared_path

    from srpl_cli.vad import speech_regions

    real = load_audio(sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))[0])
    a, b = max(speech_regions(real), key=lambda r: r[1] - r[0])  # the longest run of speech
    speech = real[a : a + min(b - a, SR)]
    wave = np.concatenate([speech, np.zeros(3 * SR, np.float32), speech])
    out = preprocess(wave)
    # the 3 s gap is cut down to at most ~0.2 s on each side; the speech is kept
    assert 2 * len(speech) - 0.1 * SR <= len(out) < 2 * len(speech) + 0.6 * SR
    # noise is not speech to the detector: kept whole rather than embedded from nothing
    noise = (0.1 * np.random.default_rng(2).standard_normal(3 * SR)).astype(np.float32)
    assert len(preprocess(noise)) == len(noise) - len(noise) % 480


def test_identifier_names_the_front_end(backbone):
    """The cache key changes when the front end does, so old embeddings are never reused by mistake."""
    assert backbone.identifier.endswith(f":fe{backbone.frontend_version}:w{backbone.window_s:g}")
    bumped = type("Bumped", (type(backbone),), {"frontend_version": backbone.frontend_version + 1})
    clone = bumped.__new__(bumped)
    clone.__dict__.update(backbone.__dict__)
    assert clone.identifier != backbone.identifier
