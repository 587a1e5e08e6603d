"""`synthesize` end to end with the perturb engine: layout, manifest, determinism, safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from srpl_cli.audio import save_audio
from srpl_cli.errors import DataError, UsageError
from srpl_cli.synthesis import SelectionParams, read_synthetic, synthesize
from srpl_cli.synthesis.run import transform_of

SR = 16000


def _voice(f0: float, seed: int, seconds: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f) / SR
    w = sum(0.2 / k * np.sin(k * phase) for k in range(1, 10)) + 0.005 * rng.standard_normal(t.size)
    return (w * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2)).astype(np.float32)


@pytest.fixture
def enroll(tmp_path: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for s, f0 in (("alice", 210.0), ("bob", 110.0)):
        for i in range(2):
            p = save_audio(tmp_path / "enroll" / s / f"{i}.flac", _voice(f0, i))
            out.setdefault(s, []).append(p)
    return out


class FakeBackbone:
    """Embeds by a few spectral band energies: deterministic, cheap, speaker-ish on our tones."""

    identifier = "fake:1"

    def embed(self, waves):
        out = []
        for w in waves:
            spec = np.abs(np.fft.rfft(w, 4096)) ** 2
            bands = np.array([b.sum() for b in np.array_split(spec[:400], 8)]) + 1e-9
            v = np.log(bands)
            v = v - v.mean()
            out.append(v / np.linalg.norm(v))
        return np.stack(out).astype(np.float32)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.flac"))}


def test_perturb_writes_layout_manifest_and_is_deterministic(tmp_path: Path, enroll) -> None:
    calls = []
    rep = synthesize(
        enroll,
        tmp_path / "a",
        variants=3,
        unknown_speakers=3,
        seed=7,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert (rep.known_kept, rep.unknown_kept, rep.known_dropped) == (6, 6, 0)  # 3 unknowns x 2 clips
    assert calls and calls[-1][0] == calls[-1][1]
    known, unknown = read_synthetic(tmp_path / "a")
    assert sorted(known) == ["alice", "bob"] and all(len(v) == 3 for v in known.values())
    assert len(unknown) == 6 and {p.parent.name for p in unknown} == {
        "pseudo-001",
        "pseudo-002",
        "pseudo-003",
    }
    for p in [*known["alice"], *unknown]:
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.format) == (SR, 1, "FLAC")
        data, _ = sf.read(str(p), dtype="float32")
        assert np.abs(data).max() < 1.0 and np.isfinite(data).all()

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["engine"] == "perturb" and manifest["seed"] == 7 and manifest["selection"] is None
    entry = manifest["files"][0]
    assert entry["role"] == "known" and entry["source"] == str(enroll["alice"][0]) and entry["kept"]
    # the recorded transform regenerates the file (up to 16-bit quantisation)
    from srpl_cli.audio import load_audio

    regen = transform_of(entry).apply(load_audio(enroll["alice"][0]), SR)
    np.testing.assert_allclose(load_audio(tmp_path / "a" / entry["path"]), regen, atol=1 / 16000)
    unk = [f for f in manifest["files"] if f["role"] == "unknown"]
    assert unk[0]["source_speaker"] == "alice" and unk[0]["transform"]["name"].startswith("pseudo_")

    synthesize(enroll, tmp_path / "b", variants=2, unknown_speakers=2, seed=7)
    synthesize(enroll, tmp_path / "c", variants=2, unknown_speakers=2, seed=8)
    a, b, c = (_files(tmp_path / d) for d in "abc")
    # same seed: identical bytes (each file's randomness is keyed by seed, speaker and index, so a
    # smaller run reproduces a prefix of a larger one)
    assert b and all(a[k] == b[k] for k in b)
    assert b.keys() == c.keys()
    # every variant differs; a pseudo-unknown of the discrete speed family (0.8x / 1.25x) may repeat
    assert all(b[k] != c[k] for k in b if k.startswith("known/"))


def test_selection_policy_is_applied_and_recorded(tmp_path: Path, enroll) -> None:
    params = SelectionParams(k_known=1, unknown_bound=None, n_unknown=1)
    rep = synthesize(
        enroll, tmp_path / "s", variants=3, unknown_speakers=4, seed=1, backbone=FakeBackbone(), select=params
    )
    assert (rep.known_kept, rep.known_dropped) == (2, 4)
    assert (rep.unknown_kept, rep.unknown_dropped) == (2, 6)
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["selection"]["params"] == params.to_dict()
    assert manifest["selection"]["known"] == {"kept": 2, "dropped": 4}
    dropped = [f for f in manifest["files"] if not f["kept"]]
    assert len(dropped) == 10 and all(f["path"] is None and f["selection_score"] is not None for f in dropped)
    known, unknown = read_synthetic(tmp_path / "s")
    assert sum(map(len, known.values())) == 2 and len(unknown) == 2
    with pytest.raises(UsageError):
        synthesize(enroll, tmp_path / "t", select=params)  # selection needs a backbone


def test_real_unknown_dir_is_copied(tmp_path: Path, enroll) -> None:
    others = tmp_path / "others"
    save_audio(others / "carol" / "x.flac", _voice(300, 5))
    save_audio(others / "dave.flac", _voice(90, 6))
    rep = synthesize(enroll, tmp_path / "o", variants=1, unknown_speakers=0, seed=0, unknown_dir=others)
    assert rep.real_unknown == 2
    _, unknown = read_synthetic(tmp_path / "o")
    assert sorted(p.parent.name for p in unknown) == ["real-carol", "real-dave"]


def test_real_unknown_over_full_scale_is_scaled_not_clipped(tmp_path: Path, enroll) -> None:
    """A float WAV peaking at 2.0 is scaled into range on copy; hard clipping would distort the voice."""
    others = tmp_path / "others"
    others.mkdir()
    loud = 2.0 * _voice(300, 5) / np.max(np.abs(_voice(300, 5)))
    sf.write(others / "erin.wav", loud, SR, subtype="FLOAT")
    synthesize(enroll, tmp_path / "o", variants=0, unknown_speakers=0, seed=0, unknown_dir=others)
    _, unknown = read_synthetic(tmp_path / "o")
    out, _ = sf.read(unknown[0], dtype="float32")
    assert np.max(np.abs(out)) <= 1.0
    np.testing.assert_allclose(out, loud / 2.0, atol=2e-4)  # same shape, only the level changed


def test_refuses_foreign_dirs_and_replaces_previous_output(tmp_path: Path, enroll) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a previous"):
        synthesize(enroll, foreign, variants=1, unknown_speakers=0)
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "out"
    synthesize(enroll, out, variants=2, unknown_speakers=1, seed=0)
    synthesize(enroll, out, variants=1, unknown_speakers=0, seed=0)  # a previous output is replaced
    known, unknown = read_synthetic(out)
    assert sum(map(len, known.values())) == 2 and unknown == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enroll", "foreign", "out"]
    with pytest.raises(DataError):
        read_synthetic(foreign)
    with pytest.raises(UsageError):
        synthesize(enroll, tmp_path / "x", engine="vocoder")


def test_interrupted_run_leaves_nothing(tmp_path: Path, enroll, monkeypatch: pytest.MonkeyPatch) -> None:
    import srpl_cli.audio

    real_save = srpl_cli.audio.save_audio
    count = {"n": 0}

    def flaky(path, wave, sr=SR):
        count["n"] += 1
        if count["n"] == 3:
            raise KeyboardInterrupt
        return real_save(path, wave, sr)

    monkeypatch.setattr(srpl_cli.audio, "save_audio", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthesize(enroll, tmp_path / "half", variants=2, unknown_speakers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enroll"]


def test_selection_on_real_speech_with_dvector(tmp_path: Path) -> None:
    """Real clips + d-vectors: pseudo-unknowns are farther from the targets than kept variants."""
    from conftest import shared_path

    from srpl_cli.backbones.dvector import DVectorBackbone

    root = shared_path("emodb")
    enroll = {s: sorted((root / s).glob("*N*.flac"))[:2] for s in ("03", "08")}
    rep = synthesize(
        enroll,
        tmp_path / "r",
        variants=3,
        unknown_speakers=2,
        seed=0,
        backbone=DVectorBackbone.load(device="cpu"),
        select=SelectionParams(k_known=2, unknown_bound=None, n_unknown=2),
    )
    assert rep.known_kept == 4 and rep.unknown_kept == 4
    files = json.loads((tmp_path / "r" / "manifest.json").read_text())["files"]
    known = [f["selection_score"] for f in files if f["role"] == "known" and f["kept"]]
    unknown = [f["selection_score"] for f in files if f["role"] == "unknown"]
    assert min(known) > np.mean(unknown)


def test_in_memory_candidates_match_the_written_files(tmp_path: Path, enroll) -> None:
    from srpl_cli.audio import load_audio
    from srpl_cli.synthesis import perturb_candidates

    waves = {s: [load_audio(p) for p in clips] for s, clips in enroll.items()}
    cands = perturb_candidates(waves, variants=1, unknowns=2, seed=4)
    assert [(c.role, c.speaker) for c in cands] == [
        ("known", "alice"),
        ("known", "bob"),
        *[("unknown", "pseudo-001")] * 2,
        *[("unknown", "pseudo-002")] * 2,
    ]
    synthesize(enroll, tmp_path / "w", variants=1, unknown_speakers=2, seed=4)
    known, unknown = read_synthetic(tmp_path / "w")
    written = [*known["alice"], *known["bob"], *unknown]
    for c, p in zip(cands, written, strict=True):
        np.testing.assert_allclose(load_audio(p), c.wave, atol=1 / 16000)


def test_real_unknown_ids_never_merge_different_people(tmp_path):
    import numpy as np
    import soundfile as sf

    from srpl_cli.synthesis.run import _real_unknowns

    wave = np.zeros(1600, np.float32)
    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "1.wav", wave, 16000)
    sf.write(tmp_path / "a.wav", wave, 16000)
    sf.write(tmp_path / "a.flac", wave, 16000)
    ids = {i for i, _ in _real_unknowns(tmp_path)}
    assert len(ids) == 3


def test_silent_and_unreadable_sources_are_skipped_with_a_warning(
    tmp_path: Path, enroll, caplog: pytest.LogCaptureFixture
) -> None:
    """A silent clip gave silent variants listed as kept, and one unreadable clip stopped the run
    (while tune skips it): both are now skipped, with a warning, and the rest goes on."""
    silent = save_audio(tmp_path / "enroll" / "alice" / "9-silent.flac", np.zeros(SR, np.float32))
    broken = tmp_path / "enroll" / "bob" / "9-broken.wav"
    broken.write_bytes(b"RIFF junk" * 20)
    with_bad = {"alice": [*enroll["alice"], silent], "bob": [*enroll["bob"], broken]}
    with caplog.at_level("WARNING"):
        rep = synthesize(with_bad, tmp_path / "o", variants=6, unknown_speakers=2, seed=0)
    assert sorted(rep.skipped) == sorted([str(silent), str(broken)])
    text = caplog.text
    assert "9-silent.flac" in text and "silent" in text and "9-broken.wav" in text
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    sources = {f.get("source") for f in manifest["files"]}
    assert str(silent) not in sources and str(broken) not in sources
    for f in manifest["files"]:
        wave, _ = sf.read(tmp_path / "o" / f["path"], dtype="float32")
        assert np.max(np.abs(wave)) > 0.01  # no silent variant is written
