"""End to end through the real `srpl` command on real speech (d-vector backbone, fully offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import shared_path


def srpl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "srpl_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SRPL_NO_PROGRESS": "1", "COLUMNS": "200"},
    )


def identify_json(ws: Path, *clips) -> list[dict]:
    r = srpl("identify", *clips, "--json", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def subset(root: Path, dest: Path, n_speakers: int, n_clips: int) -> Path:
    """``dest/<speaker>/`` with symlinks to the first clips of the first speakers of ``root``."""
    for d in sorted(root.iterdir())[:n_speakers]:
        (dest / d.name).mkdir(parents=True)
        for p in sorted(d.glob("*.flac"))[:n_clips]:
            (dest / d.name / p.name).symlink_to(p)
    return dest


@pytest.fixture(scope="module")
def libri_model(tmp_path_factory):
    """`srpl tune` on librispeech-mini speakers (first 5 clips of each, by name) with d-vectors."""
    speakers = shared_path("librispeech-mini", "speakers")
    ws = tmp_path_factory.mktemp("ws")
    r = srpl("tune", speakers, "--shots", "5", "--backbone", "dvector", "--workspace", ws, "--json")
    assert r.returncode == 0, r.stderr
    return speakers, ws, json.loads(r.stdout)


def test_tune_then_identify_librispeech(libri_model):
    speakers, ws, report = libri_model
    assert report["shots"] == 5 and len(report["speakers"]) == 10 and report["version"] == "v0001"
    held = {p: p.parent.name for d in sorted(speakers.iterdir()) for p in sorted(d.glob("*.flac"))[5:]}
    results = identify_json(ws, *held)
    assert [r["path"] for r in results] == [str(p) for p in held]  # paths as given, in order
    right = np.mean([r["speaker"] == held[Path(r["path"])] for r in results])
    assert set(results[0]["scores"]) == set(report["speakers"])
    others = identify_json(ws, speakers.parent / "others")
    rejected = np.mean([r["speaker"] is None for r in others])
    print(f"held-back clips right: {right:.1%}, others rejected: {rejected:.1%}")
    assert right >= 0.95
    assert rejected >= 0.90


def test_identify_table_and_top_k(libri_model):
    speakers, ws, _ = libri_model
    clip = sorted(sorted(speakers.iterdir())[0].glob("*.flac"))[-1]
    r = srpl("identify", clip, "--top-k", "3", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert clip.parent.name in r.stdout
    res = identify_json(ws, clip)[0]
    assert res["score"] == max(res["scores"].values())


def test_bad_clips_are_reported_and_skipped(libri_model, tmp_path):
    speakers, ws, _ = libri_model
    good = sorted(sorted(speakers.iterdir())[1].glob("*.flac"))[-1]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    (tmp_path / "no_audio").mkdir()
    r = srpl(
        "identify",
        good,
        corrupt,
        silent,
        tmp_path / "missing.wav",
        tmp_path / "no_audio",
        "--json",
        "--workspace",
        ws,
    )
    assert r.returncode == 0  # something usable remained
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["speaker"] == good.parent.name
    assert all("error" in x and x["speaker"] is None for x in lines[1:])
    assert len(lines) == 5 and lines[-1]["path"] == str(tmp_path / "no_audio")
    assert "corrupt.wav" in r.stderr and "silent.wav" in r.stderr and "Traceback" not in r.stderr
    r = srpl("identify", corrupt, "--workspace", ws)
    assert r.returncode == 3 and "Traceback" not in r.stderr


def test_enroll_reports_quality(tmp_path):
    speakers = shared_path("librispeech-mini", "speakers")
    enroll = subset(speakers, tmp_path / "enroll", 3, 3)
    (enroll / "ghost").mkdir()
    sf.write(enroll / "ghost" / "quiet.wav", np.zeros(16000, np.float32), 16000)
    r = srpl("enroll", enroll, "--backbone", "dvector", "--workspace", tmp_path / "ws", "--json")
    # a speaker left with no usable clip would silently be missing from the model: refused by name
    assert r.returncode == 3 and "'ghost'" in r.stderr and "--allow-missing" in r.stderr, r.stderr
    r = srpl(
        "enroll", enroll, "--backbone", "dvector", "--workspace", tmp_path / "ws", "--json", "--allow-missing"
    )
    assert r.returncode == 0, r.stderr
    assert "'ghost'" in r.stderr  # still warned
    report = json.loads(r.stdout)
    used = {s["speaker"]: s["clips_used"] for s in report["speakers"]}
    assert used == {**{d.name: 3 for d in sorted(speakers.iterdir())[:3]}, "ghost": 0}
    assert any("quiet.wav" in p["path"] for p in report["problems"])


def test_too_few_speakers_is_a_clear_error(tmp_path):
    speakers = shared_path("librispeech-mini", "speakers")
    r = srpl(
        "tune",
        subset(speakers, tmp_path / "e", 1, 3),
        "--backbone",
        "dvector",
        "--workspace",
        tmp_path / "ws",
    )
    assert r.returncode == 3 and "at least 2 speakers" in r.stderr and "Traceback" not in r.stderr


def test_killed_tune_leaves_previous_model_usable(libri_model, tmp_path):
    """SIGKILL a second tune at several moments: the model in use is always a complete version."""
    speakers, ws, _ = libri_model
    clip = sorted(sorted(speakers.iterdir())[2].glob("*.flac"))[-1]
    before = identify_json(ws, clip)[0]
    interrupted = 0
    for delay in (0.3, 0.8, 1.5, 3.0):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "srpl_cli",
                "tune",
                str(speakers),
                "--shots",
                "4",
                "--backbone",
                "dvector",
                "--workspace",
                str(ws),
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        interrupted += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        current = (ws / "models" / "default" / "CURRENT").read_text().strip()
        assert (ws / "models" / "default" / current / "meta.json").is_file()
        after = identify_json(ws, clip)[0]
        assert after["speaker"] == before["speaker"] == clip.parent.name
    assert interrupted >= 1
    # the next writer cleans the debris of the killed ones
    r = srpl("tune", speakers, "--shots", "5", "--backbone", "dvector", "--workspace", ws, "--quiet")
    assert r.returncode == 0, r.stderr
    assert not any((ws / "tmp").iterdir())


def test_emodb_flow(tmp_path):
    """The same flow on acted German emotional speech: neutral enrollment, any emotion to identify."""
    emodb = shared_path("emodb")
    speakers = sorted(emodb.iterdir())
    known, unknown = speakers[:5], speakers[5:]
    enroll = tmp_path / "enroll"
    held = {}
    for d in known:
        (enroll / d.name).mkdir(parents=True)
        neutral = sorted(d.glob("?????N?.flac"))
        for p in neutral[:5]:
            (enroll / d.name / p.name).symlink_to(p)
        held.update({p: d.name for p in sorted(d.glob("*.flac")) if p not in neutral[:5]})
    ws = tmp_path / "ws"
    r = srpl("tune", enroll, "--shots", "5", "--backbone", "dvector", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    res = identify_json(ws, *held)
    top1 = np.mean([x["top"][0]["speaker"] == held[Path(x["path"])] for x in res])
    neutral = [x for x in res if Path(x["path"]).name[5] == "N"]
    neutral_right = np.mean([x["speaker"] == held[Path(x["path"])] for x in neutral])
    others = identify_json(ws, *unknown)
    rejected = np.mean([x["speaker"] is None for x in others])
    print(
        f"emodb: top-1 {top1:.1%}, held-out neutral right {neutral_right:.1%}, unknown rejected {rejected:.1%}"
    )
    # measured: 85% / 95% / 99%. Emotional clips of known speakers mostly fall under the threshold: the
    # d-vector of 5 neutral clips does not cover acted emotions (docs/usage.md, calibration)
    assert top1 >= 0.75
    assert neutral_right >= 0.8
    assert rejected >= 0.9


def test_synthesize_then_tune_with_synthetic(tmp_path):
    """`srpl synthesize` output feeds `srpl tune --synthetic` (SRPL+ with pseudo-unknown voices)."""
    speakers = shared_path("librispeech-mini", "speakers")
    enroll = subset(speakers, tmp_path / "enroll", 3, 3)
    out = tmp_path / "synth"
    r = srpl(
        "synthesize",
        enroll,
        "--out",
        out,
        "--unknown-speakers",
        "3",
        "--variants",
        "1",
        "--seed",
        "7",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["unknown_kept"] > 0 and report["known_kept"] == 3  # --variants is per speaker
    assert len(list((out / "unknown").rglob("*.flac"))) == report["unknown_kept"]
    info = sf.info(next((out / "unknown").rglob("*.flac")))
    assert info.samplerate == 16000 and info.channels == 1
    ws = tmp_path / "ws"
    r = srpl(
        "tune",
        enroll,
        "--shots",
        "3",
        "--backbone",
        "dvector",
        "--method",
        "srpl",
        "--cs-my",
        out,
        "--workspace",
        ws,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    tuned = json.loads(r.stdout)
    assert tuned["n_unknown"] == report["unknown_kept"]
    # the 3 variants join the enrollment but are never scored as held-out genuine clips
    assert tuned["calibration"]["heldout_genuine"] == 9
    clip = sorted(sorted(speakers.iterdir())[0].glob("*.flac"))[-1]
    res = identify_json(ws, clip)[0]
    assert res["top"][0]["speaker"] == clip.parent.name and len(res["scores"]) == 3
    # a folder that is not a synthesis output is never overwritten
    r = srpl("synthesize", enroll, "--out", enroll, "--unknown-speakers", "1")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert sorted(p.name for p in enroll.iterdir()) == sorted(d.name for d in sorted(speakers.iterdir())[:3])


def test_evaluate_audio_folders_with_folds(tmp_path):
    """`srpl evaluate` embeds speaker folders (cached in the workspace) and runs paired folds."""
    speakers = shared_path("librispeech-mini", "speakers")
    ws = tmp_path / "ws"
    args = [
        "evaluate",
        "--data",
        speakers,
        "--unknown-dir",
        speakers.parent / "others",
        "--backbone",
        "dvector",
        "--folds",
        "3",
        "--known",
        "5",
        "--shots",
        "5",
        "--workspace",
        ws,
        "--json",
    ]
    r = srpl(*args)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    summary = report["summary"]
    assert set(summary) == {"cosine", "anchored-cosine"}  # the baseline and tune's default
    assert summary["cosine"]["oscr"]["mean"] > 95
    assert summary["anchored-cosine"]["oscr_vs_cosine"]["folds"] == 3
    assert report["protocol"]["clips"] == 200
    cached = len(list((ws / "cache").rglob("*.npy")))
    assert cached == 200
    r = srpl(*args)  # second run: every embedding from the cache, same numbers
    assert r.returncode == 0 and json.loads(r.stdout)["summary"] == summary
    assert len(list((ws / "cache").rglob("*.npy"))) == cached


def test_evaluate_audio_cs_my_synthesizes_per_fold(tmp_path):
    """--cs-my on audio: each fold's enrollment clips are perturbed into pseudo-unknown training voices."""
    speakers = shared_path("librispeech-mini", "speakers")
    data = subset(speakers, tmp_path / "data", 4, 4)
    r = srpl(
        "evaluate",
        "--data",
        data,
        "--backbone",
        "dvector",
        "--folds",
        "1",
        "--known",
        "2",
        "--shots",
        "2",
        "--method",
        "srpl",
        "--cs-my",
        "--workspace",
        tmp_path / "ws",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["protocol"]["cs_my"] is True and "srpl" in report["summary"]
    assert not any((tmp_path / "ws" / "tmp").iterdir())  # per-fold synthesis leaves nothing behind


def test_tune_with_unlabeled_pool_then_identify_learn(tmp_path):
    """`tune --unlabeled` stores a pool and learns from it; `identify --learn` grows it for the next tune."""
    emodb = shared_path("emodb")
    speakers = sorted(emodb.iterdir())
    enroll, heard, later = tmp_path / "enroll", tmp_path / "heard", tmp_path / "later"
    heard.mkdir()
    later.mkdir()
    for d in speakers[:3]:
        (enroll / d.name).mkdir(parents=True)
        neutral = sorted(d.glob("?????N?.flac"))[:5]
        for p in neutral:
            (enroll / d.name / p.name).symlink_to(p)
        others = [p for p in sorted(d.glob("*.flac")) if p not in neutral]
        for p in others[:6]:
            (heard / p.name).symlink_to(p)
        (later / others[6].name).symlink_to(others[6])
    for d in speakers[3:6]:  # strangers the device hears too
        for p in sorted(d.glob("*.flac"))[:6]:
            (heard / p.name).symlink_to(p)
    (heard / "again.flac").symlink_to(sorted(heard.iterdir())[0].resolve())  # same clip twice
    ws = tmp_path / "ws"
    base = ["--shots", "5", "--backbone", "dvector", "--workspace", ws]
    r = srpl("tune", enroll, *base, "--unlabeled", heard, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["method"] == "pool-propagation" and report["n_pool"] == 36 and report["n_pool_added"] == 36
    assert "pool" in report["calibration"]
    meta = json.loads((ws / "pool" / "dvector" / "pool.json").read_text())
    assert len(meta["clips"]) == 36 and all(c["source"].startswith("tune --unlabeled") for c in meta["clips"])
    r = srpl("identify", later, "--learn", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "3 clip(s) added, 39 in all" in r.stderr
    r = srpl("tune", enroll, *base)  # the stored pool is used without naming it again
    assert r.returncode == 0, r.stderr
    assert "tuned pool-propagation" in r.stdout and "unlabeled pool: 39 clips (0 added now)" in r.stdout
    assert "held-out at this threshold" in r.stdout
    r = srpl("tune", enroll, *base, "--no-pool", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["method"] == "anchored-cosine"
    r = srpl("tune", enroll, *base, "--unlabeled", tmp_path / "nope")
    assert r.returncode != 0 and "no such directory (--unlabeled)" in r.stderr and "Traceback" not in r.stderr


def test_tune_warns_when_the_pool_holds_enrolled_people_only(tmp_path):
    """A pool of the enrolled people's own other clips teaches nothing about strangers: tune says so,
    switches propagation off and keeps the cross-fitted threshold."""
    speakers = sorted(shared_path("librispeech-mini", "speakers").iterdir())[:4]
    enroll, heard = tmp_path / "enroll", tmp_path / "heard"
    heard.mkdir()
    for d in speakers:
        clips = sorted(d.glob("*.flac"))
        (enroll / d.name).mkdir(parents=True)
        for p in clips[:5]:
            (enroll / d.name / p.name).symlink_to(p)
        for p in clips[5:]:
            (heard / p.name).symlink_to(p)
    base = ["--shots", "5", "--backbone", "dvector", "--workspace", tmp_path / "ws"]
    r = srpl("tune", enroll, *base, "--unlabeled", heard)
    assert r.returncode == 0, r.stderr
    assert "pool seems to hold enrolled people only" in r.stderr
    assert "equal held-out false-accept and false-reject rates" in r.stdout
    r = srpl("tune", enroll, *base, "--json")
    pool = json.loads(r.stdout)["calibration"]["pool"]
    assert pool["strangers"] is False and pool["threshold"] is None


def test_evaluate_with_unlabeled_share_on_audio(tmp_path):
    """`evaluate --unlabeled-share` on audio folders: pool methods by default, operating-point metrics."""
    speakers = shared_path("librispeech-mini", "speakers")
    args = [
        "evaluate",
        "--data",
        speakers,
        "--unknown-dir",
        speakers.parent / "others",
        "--backbone",
        "dvector",
    ]
    args += ["--folds", "2", "--known", "5", "--shots", "5", "--unlabeled-share", "0.5"]
    r = srpl(*args, "--workspace", tmp_path / "ws", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert list(report["summary"]) == ["cosine", "anchored-cosine", "pool-propagation"]
    s = report["summary"]["pool-propagation"]
    for k in ("balanced_error", "balanced_error_oracle", "known_wrong", "unknown_accepted"):
        assert 0 <= s[k]["mean"] <= 100
    assert s["balanced_error_oracle"]["mean"] <= s["balanced_error"]["mean"]
    assert s["balanced_error_vs_cosine"]["folds"] == 2
    assert report["per_fold"][0]["pool-propagation"]["threshold"] is not None
    assert report["protocol"]["unlabeled_share"] == 0.5
    r = srpl(*args[:-2], "--method", "pool-propagation", "--workspace", tmp_path / "ws")
    assert r.returncode == 2 and "unlabeled" in r.stderr  # a pool method needs a pool
