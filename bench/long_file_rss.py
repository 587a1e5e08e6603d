"""Peak memory (RSS) of embedding one long file: flat with duration because long files are streamed.

Writes a 1-minute and an N-hour 16 kHz FLAC file to /tmp (real LibriSpeech speech, tiled; never into
the repository), then embeds each in a fresh process with ``extract_embeddings`` and the d-vector
backbone, and prints each run's peak RSS and wall time. The issue's target: a 3-hour file within
200 MB of a 1-minute file's peak.

    .venv/bin/python bench/long_file_rss.py [--hours 3] [--threads 1] [--keep]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini"
CHILD = """
import resource, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from srpl_cli.backbones.dvector import DVectorBackbone
from srpl_cli.embeddings import extract_embeddings
bb = DVectorBackbone.load()
t = time.perf_counter()
res = extract_embeddings([sys.argv[1]], bb)
assert len(res.paths_ok) == 1, res.problems
q = res.qualities[0]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t, q.duration_s, q.speech_s)
"""


def write_file(path: Path, seconds: float) -> None:
    """Tile real speech into a FLAC file of ``seconds``, written in 60 s pieces (flat memory here too)."""
    import soundfile as sf

    from srpl_cli.audio import load_audio

    clips = sorted((DATA / "speakers").glob("*/*.flac"))[:20]
    speech = np.concatenate([load_audio(c) for c in clips])
    n = int(seconds * 16000)
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC", subtype="PCM_16") as fh:
        done = 0
        while done < n:
            k = min(n - done, 60 * 16000)
            idx = (np.arange(done, done + k) % len(speech)).astype(np.int64)
            fh.write(speech[idx])
            done += k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the /tmp files")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"real data not found at {DATA}")
    rows = []
    for label, seconds in [("1 minute", 60.0), (f"{args.hours:g} hour(s)", args.hours * 3600)]:
        path = Path(f"/tmp/srpl_long_{int(seconds)}s.flac")
        if not path.exists():
            t = time.perf_counter()
            write_file(path, seconds)
            print(
                f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s",
                flush=True,
            )
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(args.threads)],
            capture_output=True, text=True, check=True, cwd=REPO,
        )  # fmt: skip
        rss, wall, dur, speech = map(float, out.stdout.split())
        rows.append((label, rss))
        print(
            f"{label}: peak RSS {rss:.0f} MB, {wall:.0f} s ({dur / wall:.0f}x real time), speech {speech:.0f} s of {dur:.0f} s",
            flush=True,
        )
        if not args.keep:
            path.unlink()
    print(f"difference: {rows[1][1] - rows[0][1]:+.0f} MB (target: within 200 MB)")


if __name__ == "__main__":
    main()
