"""Embedding extraction: batching, bad clips reported, and the content-addressed cache."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from srpl_cli.audio import AudioQuality
from srpl_cli.backbones.base import Backbone
from srpl_cli.embeddings import EmbeddingCache, ExtractionResult, extract_embeddings, file_sha256

SR = 16000


class CountingBackbone(Backbone):
    """Deterministic fake: embedding = simple statistics of the wave; counts every clip it embeds."""

    name = "fake"
    dim = 4

    def __init__(self, ident: str = "fake:v1") -> None:
        self.calls: list[int] = []
        self._ident = ident

    @classmethod
    def load(cls, source=None, *, local_files_only=None, device=None) -> CountingBackbone:  # type: ignore[override]
        return cls()

    @property
    def identifier(self) -> str:
        return self._ident

    def embed(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        self.calls.append(len(waves))
        out = np.array([[len(w) / SR, float(np.std(w)), float(np.mean(np.abs(w))), 1.0] for w in waves])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)

    @property
    def n_embedded(self) -> int:
        return sum(self.calls)


@pytest.fixture(autouse=True)
def _energy_detector(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about batching and caching, on synthetic tones the trained speech model rightly
    calls non-speech: they run with the energy detector unless marked ``real_vad``."""
    if "real_vad" not in request.keywords:
        monkeypatch.setenv("SRPL_VAD", "energy")


def speech(seconds: float, freq: float = 150.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    noise = 0.001 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * env * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture
def clips(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "clips"
    d.mkdir()
    out = {}
    for i, secs in enumerate([1.0, 2.5, 1.5, 3.0, 0.8]):
        out[f"ok{i}"] = d / f"ok{i}.flac"
        sf.write(out[f"ok{i}"], speech(secs, 120 + 30 * i, seed=i), SR, subtype="PCM_16")
    out["silent"] = d / "silent.wav"
    sf.write(out["silent"], np.zeros(SR, np.float32), SR)
    out["short"] = d / "short.wav"
    wave = np.zeros(2 * SR, np.float32)
    wave[SR // 2 : SR // 2 + int(0.3 * SR)] = speech(0.3)
    sf.write(out["short"], wave, SR)
    out["corrupt"] = d / "corrupt.wav"
    out["corrupt"].write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    out["missing"] = d / "missing.wav"
    return out


def test_extracts_in_input_order_and_reports_problems(clips: dict[str, Path]) -> None:
    bb = CountingBackbone()
    order = ["ok0", "silent", "ok1", "corrupt", "ok2", "short", "missing", "ok3", "ok4"]
    seen: list[tuple[int, int]] = []
    res = extract_embeddings(
        [clips[k] for k in order], bb, progress=lambda d, t: seen.append((d, t)), batch_size=2
    )
    assert isinstance(res, ExtractionResult)
    assert res.paths_ok == [clips[k] for k in ["ok0", "ok1", "ok2", "ok3", "ok4"]]
    assert res.embeddings.shape == (5, 4) and res.embeddings.dtype == np.float32
    assert len(res.qualities) == 5 and all(isinstance(q, AudioQuality) for q in res.qualities)
    reasons = dict(res.problems)
    assert set(reasons) == {clips[k] for k in ["silent", "corrupt", "short", "missing"]}
    assert "silent" in reasons[clips["silent"]]
    assert "too little speech" in reasons[clips["short"]]
    assert "corrupt" in reasons[clips["corrupt"]]
    assert "not found" in reasons[clips["missing"]]
    assert max(bb.calls) <= 2 and bb.n_embedded == 5
    assert seen[-1] == (9, 9) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    # embedding row matches the clip (first feature is its duration)
    lengths = [1.0, 2.5, 1.5, 3.0, 0.8]
    ratios = res.embeddings[:, 0] / res.embeddings[:, 3]
    np.testing.assert_allclose(ratios, lengths, rtol=1e-3)


def test_cache_hits_are_never_decoded_or_embedded(
    clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    paths = [clips[f"ok{i}"] for i in range(5)]
    first = extract_embeddings(paths, CountingBackbone(), cache=cache)
    assert first.n_embedded == 5 and first.n_cached == 0

    import srpl_cli.embeddings as emb_mod

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached clip was decoded")

    monkeypatch.setattr(emb_mod, "validate", no_decode)
    bb = CountingBackbone()
    # renamed copy of a clip: same bytes, same cache entry
    moved = tmp_path / "renamed.flac"
    shutil.copy(paths[0], moved)
    second = extract_embeddings([*paths, moved], bb, cache=cache)
    assert bb.n_embedded == 0 and second.n_cached == 6
    np.testing.assert_array_equal(second.embeddings[:5], first.embeddings)
    np.testing.assert_array_equal(second.embeddings[5], first.embeddings[0])
    assert second.qualities[:5] == first.qualities


def test_cache_key_includes_backbone_identifier(clips: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    paths = [clips["ok0"], clips["ok1"]]
    extract_embeddings(paths, CountingBackbone("fake:v1"), cache=cache)
    other = CountingBackbone("fake:v2")
    extract_embeddings(paths, other, cache=cache)
    assert other.n_embedded == 2


def test_corrupt_cache_entry_is_recomputed(clips: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    path = clips["ok1"]
    ref = extract_embeddings([path], CountingBackbone(), cache=cache).embeddings
    entry = cache.path(file_sha256(path), "fake:v1")
    assert entry.is_file() and entry.parent.parent.parent == cache._dir("fake:v1").parent
    entry.write_bytes(b"\x93NUMPY garbage")
    bb = CountingBackbone()
    again = extract_embeddings([path], bb, cache=cache)
    assert bb.n_embedded == 1
    np.testing.assert_array_equal(again.embeddings, ref)
    # and the entry was repaired
    assert cache.get(file_sha256(path), "fake:v1") is not None
    entry.with_suffix(".json").write_text("{not json")
    assert cache.get(file_sha256(path), "fake:v1") is None


def test_duplicate_files_embedded_once(clips: dict[str, Path], tmp_path: Path) -> None:
    dup = tmp_path / "dup.flac"
    shutil.copy(clips["ok2"], dup)
    bb = CountingBackbone()
    res = extract_embeddings([clips["ok2"], dup], bb)
    assert bb.n_embedded == 1 and res.paths_ok == [clips["ok2"], dup]
    np.testing.assert_array_equal(res.embeddings[0], res.embeddings[1])


def test_nothing_usable_gives_empty_result(clips: dict[str, Path]) -> None:
    res = extract_embeddings([clips["silent"], clips["corrupt"]], CountingBackbone())
    assert res.embeddings.shape == (0, 4) and res.paths_ok == [] and len(res.problems) == 2


def test_real_dvector_with_cache(tmp_path: Path) -> None:
    from conftest import shared_path

    from srpl_cli.backbones.dvector import DVectorBackbone, packaged_weights

    if packaged_weights() is None:
        pytest.skip("resemblyzer not installed")
    paths = sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))[:3]
    bb = DVectorBackbone.load(device="cpu")
    cache = EmbeddingCache(tmp_path / "cache")
    res = extract_embeddings(paths, bb, cache=cache)
    assert res.embeddings.shape == (3, 256) and not res.problems
    again = extract_embeddings(paths, bb, cache=cache)
    assert again.n_cached == 3 and again.n_embedded == 0
    np.testing.assert_array_equal(res.embeddings, again.embeddings)


def test_cached_clip_still_checked_against_min_speech(clips: dict[str, Path], tmp_path: Path) -> None:
    """A clip cached under a lax --min-speech is rejected by a stricter later call, as if uncached."""
    cache = EmbeddingCache(tmp_path / "cache")
    bb = CountingBackbone()
    first = extract_embeddings([clips["ok1"]], bb, cache, min_speech_s=0.5)
    assert len(first.paths_ok) == 1
    strict = extract_embeddings([clips["ok1"]], bb, cache, min_speech_s=10.0)
    uncached = extract_embeddings([clips["ok1"]], CountingBackbone(), None, min_speech_s=10.0)
    assert strict.paths_ok == [] and strict.n_cached == 0
    assert strict.problems == uncached.problems
    assert "too little speech" in strict.problems[0][1]


def test_long_clips_are_not_batched_together(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are cut by total decoded length too, so long recordings are not all held in memory."""
    import srpl_cli.embeddings as emb

    monkeypatch.setattr(emb, "MAX_PENDING_SAMPLES", 4 * SR)
    bb = CountingBackbone()
    res = extract_embeddings([clips[f"ok{i}"] for i in range(5)], bb, batch_size=16)
    assert len(res.paths_ok) == 5
    assert bb.calls == [3, 1, 1]  # 0.8+1+1.5 s, then 2.5 s, then 3 s (sorted by duration)


def test_npz_in_place_of_a_cache_entry_is_recomputed(clips: dict[str, Path], tmp_path: Path) -> None:
    """A zip (.npz) archive where the .npy should be is a corrupt entry, not an internal error that
    loses the whole batch."""
    cache = EmbeddingCache(tmp_path / "cache")
    paths = [clips["ok1"], clips["ok2"]]
    ref = extract_embeddings(paths, CountingBackbone(), cache=cache).embeddings
    entry = cache.path(file_sha256(paths[0]), "fake:v1")
    np.savez(entry.with_suffix(".tmp.npz"), a=np.zeros(4, np.float32))
    entry.with_suffix(".tmp.npz").replace(entry)
    assert cache.get(file_sha256(paths[0]), "fake:v1") is None
    bb = CountingBackbone()
    again = extract_embeddings(paths, bb, cache=cache)
    assert bb.n_embedded == 1 and again.n_cached == 1
    np.testing.assert_array_equal(again.embeddings, ref)


def test_cache_key_names_the_speech_detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    energy = cache._dir("fake:v1")
    monkeypatch.delenv("SRPL_VAD")
    silero = cache._dir("fake:v1")
    assert energy.name.endswith("__energy") and "silero-vad" in silero.name and energy != silero


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_non_regular_files_are_refused_before_reading(tmp_path: Path, kind: str) -> None:
    """A FIFO named x.wav or /dev/zero used to hang in hashing; now one line, at once."""
    import os

    if kind == "fifo":
        path = tmp_path / "x.wav"
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path = tmp_path / "folder.wav"
        path.mkdir()
    res = extract_embeddings([path], CountingBackbone())
    assert res.paths_ok == []
    assert res.problems[0][0] == path and "not a regular file" in res.problems[0][1]


@pytest.mark.real_vad
def test_long_clip_embedded_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip over LONG_CLIP_S is streamed: never decoded whole, same quality figures, and an embedding
    that is the speech-weighted mean of its blocks'."""
    from conftest import shared_path

    import srpl_cli.embeddings as emb
    from srpl_cli.audio import load_audio

    clips = sorted(shared_path("librispeech-mini", "speakers").glob("*/*.flac"))[:3]
    wave = np.concatenate([load_audio(c) for c in clips] + [np.zeros(3 * SR, np.float32)])
    path = tmp_path / "long.flac"
    sf.write(path, wave, SR, subtype="PCM_16")
    monkeypatch.setattr(emb, "LONG_CLIP_S", 10.0)
    monkeypatch.setattr(emb, "STREAM_BLOCK_S", 8.0)

    def no_whole_decode(*a: object, **k: object) -> None:
        raise AssertionError("a long clip was decoded whole")

    monkeypatch.setattr(emb, "validate", no_whole_decode)
    bb = CountingBackbone()
    res = extract_embeddings([path], bb)
    assert res.paths_ok == [path] and res.problems == []
    n_blocks = -(-len(wave) // (8 * SR))
    assert bb.calls == [1] * (n_blocks - 1)  # the last block holds only silence: not embedded
    from srpl_cli.audio import assess

    whole = assess(load_audio(path))
    q = res.qualities[0]
    assert q.duration_s == whole.duration_s
    assert abs(q.speech_s - whole.speech_s) < 0.05 * whole.speech_s  # VAD per block vs whole clip
    assert np.linalg.norm(res.embeddings[0]) == pytest.approx(1.0, abs=1e-5)
