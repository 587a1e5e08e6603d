"""Start-up costs of the command line: `srpl --help`, and a cold `srpl identify clip.wav`.

Run: python bench/cli.py  (identify needs ../shared/data; it tunes a d-vector model in a temp workspace)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini" / "speakers"


def timed(args: list[str], repeat: int = 5) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "srpl_cli", *args], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"srpl {' '.join(args)} failed: {r.stderr.strip()}")
    return times


def main() -> None:
    t = timed(["--help"])
    print(f"srpl --help: median {statistics.median(t):.3f} s, best {min(t):.3f} s (target < 0.5 s)")
    if not DATA.is_dir():
        print(f"identify: skipped ({DATA} absent)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        ws = str(Path(tmp) / "ws")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "srpl_cli",
                "tune",
                str(DATA),
                "--shots",
                "5",
                "--backbone",
                "dvector",
                "--workspace",
                ws,
                "--quiet",
            ],
            check=True,
            capture_output=True,
        )
        clip = sorted(sorted(DATA.iterdir())[0].glob("*.flac"))[-1]
        t = timed(["identify", str(clip), "--workspace", ws], repeat=3)
        print(f"srpl identify clip.wav (cold process, cached embedding): median {statistics.median(t):.2f} s")
        others = sorted((DATA.parent / "others").rglob("*.flac"))
        t = []
        for c in others[:3]:  # never embedded before: includes audio decoding + d-vector inference
            t += timed(["identify", str(c), "--workspace", ws], repeat=1)
        print(f"srpl identify clip.wav (cold process, new clip): median {statistics.median(t):.2f} s")


if __name__ == "__main__":
    main()
