"""`srpl serve` under load: latency and throughput with 1, 4 and 16 clients, a model switch by a running
`srpl tune`, and the server's memory over many requests.

Run: python bench/serve.py [--seconds 15] [--memory-requests 10000] [--memory-seconds 300]

It tunes a d-vector model on ../shared/data/librispeech-mini (first 5 clips of each speaker) in a
temp workspace, starts `srpl serve --port 0` on 127.0.0.1 (loopback only), and sends 3 s excerpts of
the held-back clips as WAV bodies. Every phase is bounded in time. Linux (reads /proc for memory).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini"


def srpl(*args: str, stderr: object = subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "SRPL_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "srpl_cli", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )


def excerpts(seconds: float = 3.0) -> list[bytes]:
    """3 s of speech from each held-back clip (6th to 10th of each speaker), as 16-bit WAV bytes."""
    out = []
    for d in sorted((DATA / "speakers").iterdir()):
        for p in sorted(d.glob("*.flac"))[5:]:
            wave, sr = sf.read(p, dtype="float32")
            n = int(seconds * sr)
            if len(wave) < n + sr:  # too short for 3 s of speech from its middle
                continue
            start = (len(wave) - n) // 2
            buf = io.BytesIO()
            sf.write(buf, wave[start : start + n], sr, format="WAV", subtype="PCM_16")
            out.append(buf.getvalue())
    return out


def in_process(ws: str, bodies: list[bytes], seconds: float) -> list[float]:
    """The same decode + embed + score without HTTP (srpl_cli.identifier, as the server calls it):
    the floor the server's one-client latency is compared with."""
    import torch

    from srpl_cli.audio import decode_audio
    from srpl_cli.identifier import Identifier
    from srpl_cli.workspace import Workspace

    torch.set_num_threads(1)  # as the server (srpl serve --threads 1)
    ident = Identifier.load(Workspace(ws))
    ident.identify_waves([("x", decode_audio(bodies[0]))])  # warm-up
    out = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        ident.identify_waves([("x", decode_audio(bodies[i % len(bodies)]))], top_k=1)
        out.append(time.perf_counter() - t)
        i += 1
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int | None = None):
    """``clients`` concurrent request loops for ``seconds`` (or ``max_requests`` in all):
    (latencies in s, error descriptions, model versions seen, wall time)."""
    latencies: list[float] = []
    errors: list[str] = []
    versions: dict[str, int] = {}
    deadline = time.perf_counter() + seconds
    sent = 0

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        nonlocal sent
        i = k
        while time.perf_counter() < deadline and (max_requests is None or sent < max_requests):
            sent += 1
            t = time.perf_counter()
            try:
                r = await client.post("/identify", content=bodies[i % len(bodies)])
                ok = r.status_code == 200
                if ok:
                    v = r.headers.get("x-srpl-model", "?")
                    versions[v] = versions.get(v, 0) + 1
                else:
                    errors.append(f"{r.status_code} {r.text[:100]}")
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            i += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k, client) for k in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, errors, versions, wall


def figures(latencies: list[float], errors: list[str], wall: float) -> str:
    if not latencies:
        return f"no successful request, {len(errors)} errors"
    ms = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return (
        f"{len(latencies) / wall:6.1f} req/s  p50 {ms[0]:6.1f} ms  p95 {ms[1]:6.1f} ms  p99 {ms[2]:6.1f} ms"
        f"  ({len(latencies)} ok, {len(errors)} errors)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each load phase")
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--memory-seconds", type=float, default=300.0, help="time cap of the memory phase")
    ap.add_argument("--memory-clients", type=int, default=4)
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent: the benchmark needs ../shared/data")
    bodies = excerpts()
    print(f"{len(bodies)} real 3 s clips (librispeech-mini held-back clips), d-vector backbone, 127.0.0.1")
    print(f"{os.cpu_count()} CPUs, load average before the run: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        ws = str(Path(tmp) / "ws")
        tune_args = [
            "tune",
            str(DATA / "speakers"),
            "--backbone",
            "dvector",
            "--workspace",
            ws,
            "--json",
            "-q",
        ]
        r = srpl(*tune_args, "--shots", "5")
        out, err = r.communicate()
        if r.returncode != 0:
            raise SystemExit(f"tune failed: {err}")
        log = Path(tmp) / "server.log"
        server = srpl("serve", "--workspace", ws, "--port", "0", stderr=log.open("w"))
        try:
            url = None
            deadline = time.monotonic() + 180
            while url is None and time.monotonic() < deadline:
                if server.poll() is not None:
                    raise SystemExit(f"server exited before listening: {log.read_text()}")
                m = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
                url = m.group(1) if m else None
                time.sleep(0.2)
            if url is None:
                raise SystemExit("server did not start in 180 s")
            asyncio.run(load(url, bodies, 1, 3))  # warm-up
            print(f"server {url}, RSS after warm-up {rss_mib(server.pid):.0f} MiB")
            base = np.percentile(np.array(in_process(ws, bodies, args.seconds)) * 1000, [50, 95])
            print(f"in-process (no HTTP): p50 {base[0]:6.1f} ms  p95 {base[1]:6.1f} ms")
            for clients in (1, 4, 16):
                lat, errors, _, wall = asyncio.run(load(url, bodies, clients, args.seconds))
                print(f"{clients:2d} client(s): {figures(lat, errors, wall)}")

            # a tune (more shots: a different model) makes v0002 current in the middle of the load
            tune = srpl(*tune_args, "--shots", "6")
            lat, errors, versions, wall = [], [], {}, 0.0
            t_end = None  # go on for one more phase length once the tune is done (10 min at most)
            while (t_end is None or time.monotonic() < t_end) and wall < 600:
                part = asyncio.run(load(url, bodies, 4, 2.0))
                lat += part[0]
                errors += part[1]
                for v, k in part[2].items():
                    versions[v] = versions.get(v, 0) + k
                wall += part[3]
                if t_end is None and tune.poll() is not None:
                    t_end = time.monotonic() + args.seconds
            _, tune_err = tune.communicate()
            after = asyncio.run(load(url, bodies, 1, 2))[2]
            print(
                f" 4 clients during srpl tune: {figures(lat, errors, wall)}; answers by version {versions};"
                f" tune exit {tune.returncode}{' ' + tune_err.strip() if tune.returncode else ''};"
                f" after it: {sorted(after)}"
            )
            for e in errors[:5]:
                print("   error:", e)

            # memory over many requests: RSS every 10 % of the way (or 500 requests)
            n = args.memory_requests
            samples = [(0, rss_mib(server.pid))]
            done = 0
            t0 = time.perf_counter()
            step = max(1, min(n // 10, 500))  # a point every 500 requests at least
            total_errors = 0
            while done < n and time.perf_counter() - t0 < args.memory_seconds:
                left = args.memory_seconds - (time.perf_counter() - t0)
                lat, errors, _, _ = asyncio.run(
                    load(url, bodies, args.memory_clients, left, min(step, n - done))
                )
                done += len(lat) + len(errors)
                total_errors += len(errors)
                samples.append((done, rss_mib(server.pid)))
            rss = [m for _, m in samples]
            print(
                f"memory over {done} requests ({args.memory_clients} clients, {time.perf_counter() - t0:.0f} s,"
                f" {total_errors} errors): RSS MiB "
                + " ".join(f"{k}:{m:.0f}" for k, m in samples)
                + f"; growth after the first 10 %: {rss[-1] - rss[1]:+.1f} MiB"
            )
            print(json.dumps({"rss_mib": samples}))
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
