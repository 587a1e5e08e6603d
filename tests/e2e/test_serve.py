"""`srpl serve` as users run it: a real uvicorn process on an ephemeral loopback port, real clips,
answers compared with `srpl identify`, a `srpl tune` while it serves."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import shared_path
from tests.e2e.test_flow import identify_json, srpl, subset

pytest.importorskip("fastapi", reason="srpl serve needs the serve extra: pip install 'srpl-cli[serve]'")
httpx = pytest.importorskip("httpx")

TOKEN = "test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def running_server(ws: Path, log: Path, *args: str):
    """Start `python -m srpl_cli serve --port 0`, yield its base URL, always stop it."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "srpl_cli", "serve", "--workspace", str(ws), "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
            if m:
                break
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        else:
            pytest.fail(f"server did not start: {log.read_text()}")
        yield f"http://127.0.0.1:{m.group(1)}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """4 librispeech speakers (3 clips each) tuned once with d-vectors, served with a token and small limits."""
    speakers = shared_path("librispeech-mini", "speakers")
    tmp = tmp_path_factory.mktemp("serve")
    enroll = subset(speakers, tmp / "enroll", 4, 3)
    ws = tmp / "ws"
    r = srpl("tune", enroll, "--shots", "3", "--backbone", "dvector", "--workspace", ws, "--json")
    assert r.returncode == 0, r.stderr
    args = (
        "--token",
        TOKEN,
        "--max-upload-mb",
        "2",
        "--max-clip-seconds",
        "20",
        "--timeout",
        "2",
        "--allow-enroll",
    )
    with running_server(ws, tmp / "server.log", *args) as (url, proc):
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            yield {"ws": ws, "speakers": speakers, "tmp": tmp, "client": client, "url": url, "proc": proc}
    assert "Traceback" not in (tmp / "server.log").read_text()


def clips_of(speakers: Path, k: int, idx: int) -> Path:
    return sorted(sorted(speakers.iterdir())[k].glob("*.flac"))[idx]


def test_identify_matches_the_cli(served):
    ws, speakers, client = served["ws"], served["speakers"], served["client"]
    known = clips_of(speakers, 1, 7)  # not an enrollment clip
    stranger = sorted((speakers.parent / "others").iterdir())[0]
    stranger = next(stranger.glob("*.flac")) if stranger.is_dir() else stranger
    cli = {Path(r["path"]).name: r for r in identify_json(ws, known, stranger, "--top-k", "3")}
    for clip in (known, stranger):
        r = client.post("/identify", params={"top_k": 3, "name": clip.name}, content=clip.read_bytes())
        assert r.status_code == 200, r.text
        assert r.headers["x-srpl-model"] == "default/v0001"
        got, want = r.json(), cli[clip.name]
        assert set(got) == set(want) and got["path"] == clip.name
        assert got["speaker"] == want["speaker"]
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert [t["speaker"] for t in got["top"]] == [t["speaker"] for t in want["top"]]
    assert cli[known.name]["speaker"] == known.parent.name
    # several clips in one multipart request: one answer each, in order, bad ones with the CLI's reason
    files = [("clip", (known.name, known.read_bytes())), ("clip", ("notes.txt", b"not audio at all"))]
    r = client.post("/identify", files=files)
    assert r.status_code == 200, r.text
    a, b = r.json()
    assert a["speaker"] == known.parent.name and a["score"] == pytest.approx(
        cli[known.name]["score"], abs=1e-4
    )
    assert b["path"] == "notes.txt" and b["speaker"] is None and "unreadable or corrupt audio" in b["error"]


def test_model_speakers_health_and_docs(served):
    client = served["client"]
    model = client.get("/model").json()
    assert model["backbone"] == "dvector" and model["version"] == "v0001" and len(model["speakers"]) == 4
    assert {"name", "method", "threshold"} <= set(model)
    speakers = client.get("/speakers").json()["speakers"]
    assert [s["name"] for s in speakers] == model["speakers"] and all(s["clips"] == 3 for s in speakers)
    assert client.get("/health").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/identify", "/speakers", "/model", "/health"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_token_is_required(served):
    url = served["url"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.get(f"{url}/health", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["error"]
    assert httpx.post(f"{url}/identify", content=b"x").status_code == 401
    assert httpx.get(f"{url}/docs").status_code == 401
    assert "access-control-allow-origin" not in httpx.get(f"{url}/health", headers=AUTH).headers


def test_bad_uploads_get_one_line_errors(served):
    client, speakers = served["client"], served["speakers"]
    r = client.post("/identify", content=b"")
    assert r.status_code == 422 and r.json() == {"error": "upload: empty file (0 bytes)"}
    r = client.post("/identify", content=b"RIFF\x00\x00garbage" * 100)
    assert r.status_code == 422 and "unreadable or corrupt audio" in r.json()["error"]
    silence = io.BytesIO()
    sf.write(silence, np.zeros(16000 * 3, np.float32), 16000, format="WAV")
    r = client.post("/identify", content=silence.getvalue())
    assert r.status_code == 422 and r.json()["error"] == "upload: silent: no audible sound"
    # over --max-upload-mb 2: refused from Content-Length, and while streaming a chunked body
    big = np.random.default_rng(0).bytes(3 * 2**20)
    r = client.post("/identify", content=big)
    assert r.status_code == 413 and r.json()["error"].startswith("upload too large: 3.0 MiB (at most 2 MiB)")
    r = client.post("/identify", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]))
    assert r.status_code == 413 and "upload too large" in r.json()["error"]
    # over --max-clip-seconds 20: refused from the header, even inside a small compressed file
    wave = np.concatenate([sf.read(clips_of(speakers, 0, i), dtype="float32")[0] for i in range(4)])
    assert len(wave) > 21 * 16000
    long = io.BytesIO()
    sf.write(long, wave[: 25 * 16000], 16000, format="OGG")
    assert len(long.getvalue()) < 2**20
    r = client.post("/identify", content=long.getvalue(), params={"name": "long.ogg"})
    assert (
        r.status_code == 413
        and r.json()["error"] == "long.ogg: clip too long: 25.0 s (at most 20 s per clip)"
    )
    r = client.post("/identify", params={"top_k": 0}, content=b"x")
    assert r.status_code == 422 and r.json()["error"].startswith("top_k:")
    r = client.post("/identify", files=[("note", (None, "just a form field"))])
    assert r.status_code == 422 and "no audio file" in r.json()["error"]
    r = client.post("/identify", files=[("clip", ("bad.wav", b"\x00" * 10))])
    assert r.status_code == 422 and r.json()["error"] == "no usable clip to identify"
    assert client.get("/health").status_code == 200  # still alive


def test_a_stalled_upload_gets_408(served):
    host, port = served["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"POST /identify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
            + b"RIFF"
        )
        t0 = time.monotonic()
        reply = ""
        while not reply.endswith("}") and (chunk := s.recv(4096)):
            reply += chunk.decode("latin-1")
    assert reply.startswith("HTTP/1.1 408") and "upload not received within 2 s" in reply
    assert time.monotonic() - t0 < 8


def test_concurrent_requests(served):
    client, speakers = served["client"], served["speakers"]
    clips = [clips_of(speakers, k, 5 + k % 3) for k in range(4)] * 3
    alone = {c: client.post("/identify", content=c.read_bytes()).json() for c in set(clips)}
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda c: client.post("/identify", content=c.read_bytes()), clips))
    assert all(r.status_code == 200 for r in replies)
    for c, r in zip(clips, replies):
        assert r.json()["speaker"] == alone[c]["speaker"]
        assert r.json()["score"] == pytest.approx(alone[c]["score"], abs=1e-4)


def test_enroll_a_speaker_over_http(served):
    """POST /speakers/NAME is `srpl speakers add`: a new version that knows NAME, used at once."""
    client, speakers, ws = served["client"], served["speakers"], served["ws"]
    before = client.get("/model").json()
    clips = [clips_of(speakers, 5, i) for i in range(3)]
    files = [("clip", (c.name, c.read_bytes())) for c in clips] + [("clip", ("junk.wav", b"RIFFjunk"))]
    r = client.post("/speakers/newcomer", files=files)
    assert r.status_code == 201, r.text
    change = r.json()
    assert change["action"] == "add" and "newcomer" in change["speakers"] and change["clips_used"] == 3
    assert [p["path"] for p in change["problems"]] == ["junk.wav"]  # labels, not temp paths
    assert change["version"] != before["version"]
    held = clips_of(speakers, 5, 8)
    r = client.post("/identify", content=held.read_bytes())
    assert r.headers["x-srpl-model"] == f"default/{change['version']}"
    assert r.json()["speaker"] == "newcomer"
    assert not any((ws / "tmp").iterdir())  # the uploads were removed
    r = client.post("/speakers/..", files=files[:1])
    assert r.status_code in (404, 422)
    r = client.post("/speakers/bad%20name", files=files[:1])
    assert r.status_code == 422 and r.json()["error"].startswith("invalid speaker name 'bad name'")
    r = client.post("/speakers/ghost", files=[("clip", ("junk.wav", b"RIFFjunk"))])
    assert r.status_code == 422 and "no usable clip for 'ghost'" in r.json()["error"]


def test_hot_switch_after_tune(served):
    """A tune makes a new version current while requests keep coming: none fails, each answer comes
    from the old or the new version, and once the tune has finished the next request uses the new one."""
    ws, speakers, tmp, client = served["ws"], served["speakers"], served["tmp"], served["client"]
    enroll = subset(speakers, tmp / "enroll5", 5, 3)
    clip = clips_of(speakers, 0, 6)
    old = client.get("/model").json()["version"]
    tune = subprocess.Popen(
        [sys.executable, "-m", "srpl_cli", "tune", str(enroll), "--shots", "3", "--backbone", "dvector",
         "--workspace", str(ws), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    seen = []
    try:
        while tune.poll() is None:
            r = client.post("/identify", content=clip.read_bytes())
            assert r.status_code == 200, r.text
            seen.append(r.headers["x-srpl-model"])
            time.sleep(0.1)  # leave the tune some CPU
    finally:
        out, err = tune.communicate(timeout=300)
    assert tune.returncode == 0, err
    new = json.loads(out)["version"]
    assert set(seen) <= {f"default/{old}", f"default/{new}"} and seen
    r = client.post("/identify", content=clip.read_bytes())
    assert r.status_code == 200 and r.headers["x-srpl-model"] == f"default/{new}"
    assert len(r.json()["scores"]) == 5
    assert client.get("/model").json()["version"] == new
    assert len(client.get("/speakers").json()["speakers"]) == 5
    # CURRENT naming a version that cannot be loaded: the server keeps the one it has
    current = ws / "models" / "default" / "CURRENT"
    current.write_text("v9999\n")
    try:
        r = client.post("/identify", content=clip.read_bytes())
        assert r.status_code == 200 and r.headers["x-srpl-model"] == f"default/{new}"
        assert client.get("/health").json()["version"] == new
    finally:
        current.write_text(new + "\n")
    assert served["proc"].poll() is None


def test_refuses_a_network_binding_without_token(tmp_path):
    r = srpl("serve", "--host", "0.0.0.0", "--workspace", tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0].startswith("error: refusing to listen on 0.0.0.0 without a token")


def test_no_model_is_one_error_line(tmp_path):
    r = srpl("serve", "--workspace", tmp_path, "--port", "0")
    assert r.returncode == 4 and r.stderr.startswith("error: no tuned model 'default'")
    assert "Traceback" not in r.stderr


def test_segments_match_the_cli(served):
    """POST /segments answers what `srpl identify --segments --json` prints for the same recording."""
    from srpl_cli.audio import load_audio

    ws, speakers, client, tmp = served["ws"], served["speakers"], served["client"], served["tmp"]
    stranger_dir = sorted(speakers.iterdir())[6]  # not among the 4 tuned speakers
    parts = [clips_of(speakers, 0, 5), sorted(stranger_dir.glob("*.flac"))[0], clips_of(speakers, 1, 6)]
    gap = np.zeros(16000, np.float32)
    wave = np.concatenate([x for p in parts for x in (load_audio(p), gap)])
    rec = tmp / "meeting.wav"
    sf.write(str(rec), wave, 16000, subtype="PCM_16")
    r = srpl("identify", rec, "--segments", "--json", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    cli = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    got = client.post("/segments", params={"name": "meeting.wav"}, content=rec.read_bytes())
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["path"] == "meeting.wav" and got.headers["x-srpl-model"].startswith("default/")
    assert [(s["speaker"], s["start"], s["end"]) for s in body["segments"]] == [
        (c["speaker"], c["start"], c["end"]) for c in cli
    ]
    names = [s["speaker"] for s in body["segments"]]
    assert sorted(speakers.iterdir())[0].name in names and any(n.startswith("unknown-") for n in names)
    # nothing of the upload stays in the workspace, and a bad upload is one line
    assert not any((ws / "tmp").glob("*upload*"))
    bad = client.post("/segments", content=b"not audio")
    assert bad.status_code == 422 and "unreadable or corrupt audio" in bad.json()["error"]
