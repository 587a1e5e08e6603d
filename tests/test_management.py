"""srpl_cli.management: speakers and model versions, refits from stored profiles, kill safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from srpl_cli import management, pipeline
from srpl_cli.errors import DataError, StateError
from srpl_cli.workspace import Workspace
from tests.conftest import shared_path

N_SPEAKERS, N_CLIPS = 4, 4


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A d-vector model on 4 librispeech-mini speakers (4 clips each), and a 5th person to add."""
    root = shared_path("librispeech-mini", "speakers")
    dirs = sorted(root.iterdir())
    enroll = tmp_path_factory.mktemp("enroll")
    for d in dirs[:N_SPEAKERS]:
        (enroll / d.name).mkdir()
        for p in sorted(d.glob("*.flac"))[:N_CLIPS]:
            (enroll / d.name / p.name).symlink_to(p)
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    report = pipeline.tune(enroll, ws, shots=N_CLIPS, backbone="dvector")
    return ws, report, dirs


@pytest.fixture
def ws(tuned, tmp_path):
    """A private copy of the tuned workspace (tests change it)."""
    src, _, _ = tuned
    dst = tmp_path / "ws"
    shutil.copytree(src.root, dst, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
    return Workspace(dst)


def _scores(ws: Workspace, X: np.ndarray, version: str | None = None) -> np.ndarray:
    backend, _, _ = pipeline.load_model(ws, version=version)
    return backend.decision_function(X)


def _profile_X(ws: Workspace) -> np.ndarray:
    return np.concatenate([X for X, _ in ws.load_profiles("dvector").values()])


class CountingBackbone:
    """Wraps the real d-vector backbone and counts the clips it embeds."""

    def __init__(self, inner):
        self.inner, self.embedded = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, waves):
        self.embedded += len(waves)
        return self.inner.embed(waves)


def test_list_speakers(ws, tuned):
    _, report, dirs = tuned
    result = management.list_speakers(ws)
    assert result.version == "v0001" and result.backbone == "dvector"
    assert [s.name for s in result.speakers] == report.speakers == [d.name for d in dirs[:N_SPEAKERS]]
    assert all(s.profile and s.clips == N_CLIPS for s in result.speakers)


def test_add_embeds_only_the_new_person_and_identifies_them(ws, tuned):
    _, _, dirs = tuned
    new = dirs[N_SPEAKERS]
    clips = sorted(new.glob("*.flac"))
    bb = CountingBackbone(pipeline.load_backbone("dvector"))
    change = management.add_speaker(ws, "grandma", [new], _backbone=bb)
    # the model was tuned with --shots 4: the first 4 usable clips (a few spare ones are embedded ahead)
    assert change.clips_used == N_CLIPS and bb.embedded <= N_CLIPS + 2
    assert change.version == "v0002" and change.previous_version == "v0001" and "grandma" in change.speakers
    assert (ws.root / "models/default/CURRENT").read_text().strip() == "v0002"
    info = json.loads((ws.root / "models/default/v0002/tune.json").read_text())
    assert info["refit"] == {"action": "add", "speaker": "grandma", "from_version": "v0001"}
    assert info["method"] == pipeline.DEFAULT_METHOD and len(info["clips"]["grandma"]) == N_CLIPS
    held = clips[N_CLIPS:]
    out = pipeline.identify(held, ws)
    assert np.mean([r.speaker == "grandma" for r in out]) >= 0.8


def test_identify_learn_loads_and_reads_each_clip_once(ws, tuned, monkeypatch):
    """`identify --learn` adds to the pool what identify just computed: one backbone load, one embedding
    and one content hash per clip."""
    from srpl_cli import embeddings, pool
    from srpl_cli.backbones.dvector import DVectorBackbone

    _, _, dirs = tuned
    clips = sorted(dirs[N_SPEAKERS].glob("*.flac"))[:3]
    loads, hashed, embedded = [], [], []
    real_load, real_hash, real_embed = (
        DVectorBackbone.load.__func__,
        embeddings.file_sha256,
        DVectorBackbone.embed,
    )
    monkeypatch.setattr(
        DVectorBackbone, "load", classmethod(lambda cls, *a, **k: loads.append(1) or real_load(cls, *a, **k))
    )
    monkeypatch.setattr(embeddings, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(
        DVectorBackbone, "embed", lambda self, w: embedded.append(len(w)) or real_embed(self, w)
    )
    answers, added, size = pipeline.identify_and_learn(clips, ws)
    assert [a.path for a in answers] == [str(p) for p in clips] and not any(a.error for a in answers)
    assert (added, size) == (3, 3)
    assert len(loads) == 1 and len(hashed) == 3 and sum(embedded) == 3
    stored = pool.load_pool(ws, "dvector")
    assert [c["sha256"] for c in stored.clips] == [real_hash(p) for p in clips]


def _retag(ws: Workspace, backbone_id: str) -> None:
    """Pretend the model in use was tuned with another backbone identifier."""
    path = ws.root / "models/default/v0001/tune.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "backbone_id": backbone_id}))


def test_identify_warns_about_other_weights_only_when_they_are(ws, tuned, caplog):
    """A model tuned on the bf16 CPU path loads silently; one tuned under an older front end says to re-tune
    (not "weights differ"); other weights are named. `speakers add` refuses both."""
    from srpl_cli.identifier import Identifier

    _, report, dirs = tuned
    current = Identifier.load(ws).backbone.identifier
    assert current.startswith("dvector:") and ":fe2" in current
    cases = {
        current + ":bf16": None,
        current.replace(":fe2", ":fe1"): "was tuned under an older dvector front end (fe1; this srpl embeds "
        "with fe2): re-tune it (srpl tune); until then scores may be off",
        current.split(":fe")[0][:-4] + "ffff:fe2:w20": "weights found",
    }
    for tagged, expected in cases.items():
        _retag(ws, tagged)
        caplog.clear()
        Identifier.load(ws)
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        if expected is None:
            assert warned == []
        else:
            assert len(warned) == 1 and expected in warned[0], warned
            with pytest.raises(StateError, match="re-tune" if "front end" in expected else "weights found"):
                management.add_speaker(ws, "grandma", [dirs[N_SPEAKERS]])
    _retag(ws, current + ":bf16")  # same weights and front end: a person can be added
    assert management.add_speaker(ws, "grandma", [dirs[N_SPEAKERS]]).version == "v0002"


def test_remove_then_add_back_reproduces_the_original_model(ws, tuned):
    """The refit uses the method, parameters, seed and threshold rule of tune: same people, same model."""
    _, report, dirs = tuned
    X = _profile_X(ws)
    before = _scores(ws, X)
    thr_before = pipeline.load_model(ws)[0].threshold_
    gone = report.speakers[1]
    change = management.remove_speaker(ws, gone)
    assert change.version == "v0002" and gone not in change.speakers
    assert not (ws.profiles_dir / "dvector" / gone).exists()  # their enrollment is deleted
    assert pipeline.load_model(ws)[0].classes_.tolist() == [s for s in report.speakers if s != gone]
    management.add_speaker(ws, gone, [dirs[1]])
    again = pipeline.load_model(ws)[0]
    assert again.classes_.tolist() == report.speakers
    np.testing.assert_allclose(again.decision_function(X), before, rtol=1e-5, atol=1e-6)
    assert again.threshold_ == pytest.approx(thr_before, abs=1e-6)


def test_rename_keeps_the_data_and_changes_the_label(ws, tuned):
    _, report, dirs = tuned
    old = report.speakers[0]
    X_old = ws.load_profiles("dvector")[old][0]
    change = management.rename_speaker(ws, old, "alice")
    assert change.new_name == "alice" and "alice" in change.speakers and old not in change.speakers
    profiles = ws.load_profiles("dvector")
    assert old not in profiles and np.array_equal(profiles["alice"][0], X_old)
    held = sorted(dirs[0].glob("*.flac"))[N_CLIPS:]
    assert {r.speaker for r in pipeline.identify(held, ws)} <= {"alice", None}
    assert any(r.speaker == "alice" for r in pipeline.identify(held, ws))


def test_speaker_errors_are_clear(ws, tuned):
    _, report, _ = tuned
    with pytest.raises(StateError, match="has no speaker 'nobody'"):
        management.remove_speaker(ws, "nobody")
    with pytest.raises(Exception, match="already has a speaker"):
        management.rename_speaker(ws, report.speakers[0], report.speakers[1])
    with pytest.raises(DataError, match="invalid speaker name"):
        management.rename_speaker(ws, report.speakers[0], "../evil")
    for s in report.speakers[:2]:
        management.remove_speaker(ws, s)
    with pytest.raises(DataError, match="at least 2"):
        management.remove_speaker(ws, report.speakers[2])
    # roll back to v0001, whose people include two removed ones: a refit says what is missing
    management.use_model(ws, "v0001")
    with pytest.raises(StateError, match="no stored dvector profile"):
        management.remove_speaker(ws, report.speakers[3])
    with pytest.raises(StateError, match="no tuned model 'other'"):
        management.list_speakers(ws, "other")


def test_models_list_show_use_remove(ws, tuned):
    _, report, _ = tuned
    management.remove_speaker(ws, report.speakers[0])
    models = management.list_models(ws)
    assert [m.name for m in models] == ["default"] and models[0].current == "v0002"
    assert [(v.version, v.current) for v in models[0].versions] == [("v0001", False), ("v0002", True)]
    assert models[0].versions[0].speakers == report.speakers and models[0].versions[0].size_bytes > 0
    shown = management.show_model(ws)
    assert shown.version == "v0002" and shown.current and shown.backend == pipeline.DEFAULT_METHOD
    assert shown.tune["refit"]["action"] == "remove"
    assert management.show_model(ws, version="v0001").tune["speakers"] == report.speakers
    with pytest.raises(StateError, match="is in use"):
        management.remove_model_version(ws, "v0002")
    management.use_model(ws, "v0001")
    assert pipeline.load_model(ws)[2].version == "v0001"
    management.remove_model_version(ws, "v0002")
    assert ws.model_versions() == ["v0001"]
    with pytest.raises(StateError, match="no complete version 'v0009'"):
        management.use_model(ws, "v0009")


# ---- kill safety: SIGKILL `srpl speakers remove` at each step of its write ----
_PAUSE = """
import os, sys, time
from pathlib import Path
marker, point = Path(sys.argv[1]), sys.argv[2]

def pause():
    marker.write_text("here")
    time.sleep(60)

import srpl_cli.calibration as cal, srpl_cli.management as man, srpl_cli.workspace as wsm
if point == "fit":
    fit = cal.fit_backend
    def fit_backend(*a, **k):
        out = fit(*a, **k)
        pause()
        return out
    cal.fit_backend = fit_backend
elif point == "current":  # the new version is renamed in, CURRENT not yet moved
    write = wsm.atomic_write_text
    def atomic_write_text(path, text):
        if Path(path).name == "CURRENT":
            pause()
        return write(path, text)
    wsm.atomic_write_text = atomic_write_text
elif point == "profile":  # CURRENT moved, the removed person's profile not yet deleted
    discard = man._discard
    def _discard(ws, path):
        pause()
        return discard(ws, path)
    man._discard = _discard
from srpl_cli.cli import main
sys.argv = ["srpl", *sys.argv[3:]]
main()
"""


@pytest.mark.parametrize("point", ["fit", "current", "profile"])
def test_kill_during_speakers_remove_leaves_the_workspace_intact(ws, tuned, tmp_path, point):
    _, report, dirs = tuned
    gone = report.speakers[2]
    clip = sorted(dirs[0].glob("*.flac"))[-1]
    before = pipeline.identify([clip], ws)[0]
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSE, str(marker), point, "speakers", "remove", gone, "-w", str(ws.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else "never paused"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the model in use is a complete version, and each of its people still has a profile
    current = (ws.root / "models/default/CURRENT").read_text().strip()
    assert current == ("v0002" if point == "profile" else "v0001")
    listing = management.list_speakers(ws)
    assert all(s.profile for s in listing.speakers)
    assert (gone in [s.name for s in listing.speakers]) == (point != "profile")
    after = pipeline.identify([clip], ws)[0]
    assert after.speaker == before.speaker == dirs[0].name
    # the next writer finishes the job and removes the debris of the killed one
    if point == "profile":
        management.remove_speaker(ws, report.speakers[3])
    else:
        management.remove_speaker(ws, gone)
    assert not any((ws.root / "tmp").iterdir())
    assert gone not in [s.name for s in management.list_speakers(ws).speakers]
