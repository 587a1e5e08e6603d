"""The install resolved a working torch/torchaudio pair (torchaudio 2.11 needs a matching torch build)."""

from __future__ import annotations


def test_torchaudio_kaldi_fbank_and_resample_work():
    import torch
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi
    import torchaudio.functional as F

    assert torchaudio.__version__.startswith("2.11")
    wave = torch.sin(torch.arange(16000) * 2 * torch.pi * 440 / 16000).unsqueeze(0)
    feats = kaldi.fbank(wave, num_mel_bins=80, sample_frequency=16000, dither=0.0)
    assert feats.shape == (98, 80) and torch.isfinite(feats).all()
    assert F.resample(wave, 16000, 8000).shape == (1, 8000)


def test_transformers_audio_models_import():
    from transformers import WavLMForXVector  # noqa: F401 - breaks when the torch/torchaudio pair does
