"""`srpl identify --segments` end to end: the real command on a recording stitched from real clips."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared_path
from tests.e2e.test_flow import srpl
from tests.test_segments import _clips, stitch


@pytest.fixture(scope="module")
def meeting(tmp_path_factory):
    """A workspace tuned on 3 speakers (d-vector, through the CLI) and a recording: 2 of them + a stranger."""
    speakers = shared_path("librispeech-mini", "speakers")
    dirs = sorted(p for p in speakers.iterdir() if p.is_dir())
    root = tmp_path_factory.mktemp("segcli")
    for d in dirs[:3]:
        (root / "enroll" / d.name).mkdir(parents=True)
        for p in sorted(d.glob("*.flac"))[:3]:
            (root / "enroll" / d.name / p.name).symlink_to(p)
    ws = root / "ws"
    r = srpl("tune", root / "enroll", "--shots", "3", "--backbone", "dvector", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    a, b, z = _clips(dirs[0], [5, 6]), _clips(dirs[1], [5]), _clips(dirs[9], [0])
    rec = root / "meeting one.flac"
    turns = stitch(rec, [("A", a[0]), ("Z", z[0]), ("B", b[0]), ("A", a[1])])
    return ws, rec, turns, {"A": dirs[0].name, "B": dirs[1].name}


def test_json_rttm_table_and_plot(meeting, tmp_path):
    ws, rec, turns, names = meeting
    r = srpl("identify", rec, "--segments", "--json", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records and all(set(x) == {"path", "start", "end", "speaker", "score"} for x in records)
    assert all(x["start"] < x["end"] for x in records)
    said = {x["speaker"] for x in records}
    assert {names["A"], names["B"]} <= said and any(s.startswith("unknown-") for s in said)

    r = srpl("identify", rec, "--segments", "--rttm", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == len(records)
    assert all(
        line.split()[:3] == ["SPEAKER", "meeting_one", "1"] and len(line.split()) == 10 for line in lines
    )

    png = tmp_path / "out" / "timeline.png"
    r = srpl("identify", rec, "--segments", "--plot", png, "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert names["A"] in r.stdout and "of speech" in r.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_segment_options_need_segments(meeting):
    ws, rec, _, _ = meeting
    r = srpl("identify", rec, "--rttm", "--workspace", ws)
    assert r.returncode != 0 and "only applies with --segments" in r.stderr
    assert "Traceback" not in r.stderr
    r = srpl("identify", rec, "--segments", "--json", "--rttm", "--workspace", ws)
    assert r.returncode != 0 and "choose one" in r.stderr
    r = srpl("identify", rec, "--segments", "--hop", "5", "--workspace", ws)
    assert r.returncode != 0 and "--hop" in r.stderr


def test_unreadable_recording_is_one_line(meeting, tmp_path):
    ws, _, _, _ = meeting
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not audio at all")
    r = srpl("identify", bad, "--segments", "--workspace", ws)
    assert r.returncode != 0
    assert "broken.wav" in r.stderr and "Traceback" not in r.stderr
