"""The tts engine end to end with a tiny randomly initialised SpeechT5 saved locally (no hub)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from srpl_cli.errors import DataError, ModelUnavailableError
from srpl_cli.synthesis import read_synthetic, synthesize
from srpl_cli.synthesis import tts as T

CHARS = "abcdefghijklmnopqrstuvwxyz',.?!-"
PIECES = [("<s>", 3), ("<pad>", 3), ("</s>", 3), ("<unk>", 2), ("\u2581", 1)] + [(c, 1) for c in CHARS]
EMB_DIM = 8


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch
    from transformers import SpeechT5Config, SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5HifiGanConfig

    root = tmp_path_factory.mktemp("tiny_tts")
    torch.manual_seed(0)
    cfg = SpeechT5Config(
        vocab_size=len(PIECES), hidden_size=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        speech_decoder_prenet_units=16, speech_decoder_postnet_units=16, speech_decoder_postnet_layers=1,
        speech_decoder_postnet_kernel=3, speaker_embedding_dim=EMB_DIM, num_mel_bins=8, reduction_factor=2,
        max_speech_positions=600, max_text_positions=200, encoder_max_relative_position=16,
    )  # fmt: skip
    SpeechT5ForTextToSpeech(cfg).save_pretrained(root / "tts")
    T.write_spm_pieces(root / "tts" / T.SPM_FILE, PIECES)
    voc = SpeechT5HifiGanConfig(
        model_in_dim=8, upsample_initial_channel=32, upsample_rates=[4, 4, 4, 4],
        upsample_kernel_sizes=[8, 8, 8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
    )  # fmt: skip
    SpeechT5HifiGan(voc).save_pretrained(root / "voc")
    return root / "tts", root / "voc"


def band_encoder(waves):
    """A deterministic stand-in for the WavLM x-vector: log band energies (8-d)."""
    out = []
    for w in waves:
        spec = np.abs(np.fft.rfft(np.asarray(w, np.float64), 2048)) ** 2
        out.append(np.log(np.array([b.sum() for b in np.array_split(spec, EMB_DIM)]) + 1e-9))
    return np.stack(out)


def test_char_tokenizer_reads_the_spm_file(tmp_path: Path) -> None:
    path = T.write_spm_pieces(tmp_path / "m.model", PIECES)
    assert T.read_spm_pieces(path) == PIECES
    tok = T.CharTokenizer.from_file(path)
    ids = tok.encode("Hi  there!")
    pieces = [PIECES[i][0] for i in ids]
    assert pieces == ["\u2581", "h", "i", "\u2581", "t", "h", "e", "r", "e", "!", "</s>"]
    assert tok.encode("#")[1] == 3  # unknown character -> <unk>
    (tmp_path / "bad.model").write_bytes(b"\xff\xff")
    with pytest.raises(ModelUnavailableError):
        T.read_spm_pieces(tmp_path / "bad.model")


def test_sentences(tmp_path: Path) -> None:
    builtin = T.builtin_sentences()
    assert len(builtin) >= 30 and all(not any(ch.isdigit() for ch in s) for s in builtin)
    (tmp_path / "s.txt").write_text("# mine\nHello there.\n\nGood night.\n")
    assert T.load_sentences(tmp_path / "s.txt") == ["Hello there.", "Good night."]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError):
        T.load_sentences(tmp_path / "empty.txt")


def test_offline_without_cache_is_a_clear_error() -> None:
    with pytest.raises(ModelUnavailableError, match="not cached"):
        T.SpeechT5Engine.load(speaker_encoder=band_encoder)
    with pytest.raises(ModelUnavailableError, match="config.json"):
        T.resolve_model_dir(T.TTS_MODEL, "/nonexistent", True)


def test_unknown_embeddings_are_normalised_and_described() -> None:
    known = np.eye(3, 8)
    rng = np.random.default_rng(0)
    for kind in T.UNKNOWN_KINDS:
        e, info = T.unknown_embedding(kind, known, rng)
        assert e.shape == (8,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
        assert info["kind"] == kind
        json.dumps(info)


def test_tts_synthesize_end_to_end(tmp_path: Path, tiny_models) -> None:
    from srpl_cli.audio import save_audio

    model_dir, voc_dir = tiny_models
    engine = T.SpeechT5Engine.load(model_dir, voc_dir, speaker_encoder=band_encoder)
    rng = np.random.default_rng(0)
    enroll = {}
    for s in ("ann", "ben"):
        enroll[s] = [
            save_audio(tmp_path / "in" / s / f"{i}.flac", 0.1 * rng.standard_normal(8000).astype(np.float32))
            for i in range(2)
        ]
    kw = dict(
        engine="tts",
        variants=2,
        unknown_speakers=1,
        tts_engine=engine,
        sentences=["Hello there.", "Good night, all."],
    )
    rep = synthesize(enroll, tmp_path / "a", seed=3, **kw)
    assert (rep.known_kept, rep.unknown_kept) == (4, 5)
    known, unknown = read_synthetic(tmp_path / "a")
    for p in [*known["ann"], *unknown]:
        info = sf.info(str(p))
        assert (info.samplerate, info.channels) == (16000, 1) and info.frames > 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["engine"] == "tts"
    first = manifest["files"][0]
    assert first["text"] == "Hello there." and first["conditioning"] == {"kind": "speaker", "speaker": "ann"}
    unk = [f for f in manifest["files"] if f["role"] == "unknown"][0]
    assert unk["conditioning"]["kind"] == "mix" and set(unk["conditioning"]["weights"]) == {"ann", "ben"}
    synthesize(enroll, tmp_path / "b", seed=3, **kw)
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").rglob("*.flac")}
    b = {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*.flac")}
    assert a == b


def _populate_hf_cache(repo_id: str, model_dir: Path) -> Path:
    """Lay the files out as huggingface_hub does: snapshots/<commit>/ and refs/main."""
    import os
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(os.environ["HF_HOME"]) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    shutil.copytree(model_dir, snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


def test_loads_from_the_hub_cache_offline(tiny_models) -> None:
    model_dir, voc_dir = tiny_models
    snap = _populate_hf_cache(T.TTS_MODEL, model_dir)
    with pytest.raises(ModelUnavailableError, match="speecht5_hifigan"):  # vocoder not cached yet
        T.SpeechT5Engine.load(speaker_encoder=band_encoder)
    _populate_hf_cache(T.VOCODER_MODEL, voc_dir)
    assert T.resolve_model_dir(T.TTS_MODEL, None, None) == snap
    engine = T.SpeechT5Engine.load(speaker_encoder=band_encoder, local_files_only=True)
    assert engine.embedding_dim == EMB_DIM
