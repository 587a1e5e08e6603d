"""Who spoke when, measured: synthetic meetings stitched from real LibriSpeech clips (docs/segments.md).

Each meeting draws 6 of the 10 librispeech-mini speakers: 4 are enrolled (`srpl tune` on their first
``--shots`` clips, d-vector backbone, the default method), 2 are strangers. Their other clips (never
the enrollment clips), trimmed of leading/trailing silence, are cut into turns of ``--turn`` seconds
(3-15 by default), one speaker after another (never the same twice), separated by pauses of 0.3-2 s of
low noise. The exact ground truth is known. ``--overlap S`` makes each turn start up to S seconds before
the previous one ends (mixed), to show what overlapped speech does.

Figures (pyannote.metrics, collar 0.25 s around reference boundaries, strangers = the one label
"unknown"): identification error rate (missed + false alarm + confusion) / reference speech; share of
the strangers' time given an enrolled name; majority label per turn; number of stranger clusters (true: 2);
speed in times real time (audio seconds per wall second, the whole segments pass without cache).
``--long 60`` writes a 60-minute meeting and reports speed and peak memory for 10 and 60 minutes.

    .venv/bin/python bench/segments.py [--meetings 8] [--seed 0] [--minutes 4] [--turn 3,15]
        [--overlap 0] [--switch-penalty 2] [--method anchored-cosine] [--long 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "librispeech-mini" / "speakers"
SR = 16000
sys.path.insert(0, str(REPO))


def trimmed(path: Path) -> np.ndarray:
    """A clip without its leading and trailing silence (energy VAD), so turns are speech end to end."""
    from srpl_cli.audio import load_audio, speech_frames

    w = load_audio(path)
    flags = np.flatnonzero(speech_frames(w))
    if len(flags) == 0:
        return w
    return w[max(0, flags[0] * 160 - 800) : min(len(w), flags[-1] * 160 + 400 + 800)]


def make_meeting(
    rng: np.random.Generator,
    pools: dict[str, np.ndarray],
    minutes: float,
    turn: tuple[float, float],
    overlap: float,
    pause: tuple[float, float] = (0.3, 2.0),
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """(waveform, [(start, end, speaker)]) from each speaker's pool of audio, used without repetition."""
    pos = dict.fromkeys(pools, 0)
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[tuple[float, float, str]] = []
    t = int(rng.uniform(*pause) * SR)
    last = None
    while t < minutes * 60 * SR:
        left = [s for s in pools if s != last and len(pools[s]) - pos[s] >= turn[0] * SR]
        if not left:
            break
        s = left[int(rng.integers(len(left)))]
        n = int(min(rng.uniform(*turn) * SR, len(pools[s]) - pos[s]))
        audio = pools[s][pos[s] : pos[s] + n]
        pos[s] += n
        if overlap > 0 and turns:
            t = max(int(turns[-1][0] * SR) + SR // 2, t - int(rng.uniform(0, overlap) * SR))
        pieces.append((t, audio))
        turns.append((t / SR, (t + n) / SR, s))
        t += n + (0 if overlap > 0 else int(rng.uniform(*pause) * SR))
        last = s
    total = max(a + len(w) for a, w in pieces) + int(0.5 * SR)
    wave = (rng.standard_normal(total) * 1e-3).astype(np.float32)  # -60 dBFS room noise
    for a, w in pieces:
        wave[a : a + len(w)] += w
    return np.clip(wave, -1, 1), turns


def annotations(turns, hyp_segments, enrolled):
    from pyannote.core import Annotation
    from pyannote.core import Segment as PSeg

    ref, ref_true, hyp = Annotation(), Annotation(), Annotation()
    for i, (a, b, s) in enumerate(turns):
        ref[PSeg(a, b), i] = s if s in enrolled else "unknown"
        ref_true[PSeg(a, b), i] = s
    for i, seg in enumerate(hyp_segments):
        hyp[PSeg(seg.start, seg.end), i] = "unknown" if seg.is_unknown else seg.speaker
    return ref, ref_true, hyp


def score_meeting(turns, result, enrolled, collar=0.25):
    from pyannote.core import Annotation, Timeline
    from pyannote.core import Segment as PSeg
    from pyannote.metrics.diarization import DiarizationErrorRate
    from pyannote.metrics.identification import IdentificationErrorRate

    ref, ref_true, hyp = annotations(turns, result.segments, enrolled)
    ier = IdentificationErrorRate(collar=collar)
    detail = ier(ref, hyp, detailed=True)
    unknown_tl = ref.label_timeline("unknown").support()
    unknown_time = unknown_tl.duration()
    named = 0.0
    for seg in result.segments:
        if not seg.is_unknown:
            overlap = Timeline([PSeg(seg.start, seg.end)]).crop(unknown_tl, mode="intersection")
            named += overlap.duration()
    # majority label per turn
    correct = 0
    for a, b, s in turns:
        chart = hyp.crop(PSeg(a, b)).chart()
        top = chart[0][0] if chart else None
        correct += top == (s if s in enrolled else "unknown")
    # strangers: how well unknown-N separates the two of them (DER on their turns only)
    sref, shyp = Annotation(), Annotation()
    for i, (a, b, s) in enumerate(turns):
        if s not in enrolled:
            sref[PSeg(a, b), i] = s
    for i, seg in enumerate(result.segments):
        if seg.is_unknown:
            shyp[PSeg(seg.start, seg.end), i] = seg.speaker
    stranger_der = DiarizationErrorRate(collar=collar)(sref, shyp.crop(unknown_tl)) if len(sref) else 0.0
    return {
        "ier": detail["identification error rate"],
        "missed": detail["missed detection"] / detail["total"],
        "false_alarm": detail["false alarm"] / detail["total"],
        "confusion": detail["confusion"] / detail["total"],
        "unknown_named": named / unknown_time if unknown_time else 0.0,
        "turn_accuracy": correct / len(turns),
        "n_turns": len(turns),
        "n_unknown_clusters": len({s.speaker for s in result.segments if s.is_unknown}),
        "stranger_der": float(stranger_der),
        "duration_s": result.duration_s,
        "overlapped": ref_true.get_overlap().duration() / ref_true.get_timeline().support().duration(),
    }


def tune_model(ws, name: str, enrolled: list[str], shots: int, method: str, root: Path):
    from srpl_cli import pipeline

    src = root / f"enroll-{name}"
    for s in enrolled:
        (src / s).mkdir(parents=True, exist_ok=True)
        for clip in sorted((DATA / s).glob("*.flac"))[:shots]:
            link = src / s / clip.name
            if not link.exists():
                link.symlink_to(clip)
    pipeline.tune(src, ws, shots=shots, backbone="dvector", method=method, model_name=name)


def run_meetings(args) -> dict:
    import soundfile as sf

    from srpl_cli.segments import SegmentParams, WindowCache, identify_segments, load_segmenter
    from srpl_cli.workspace import Workspace

    speakers = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    root = Path(tempfile.mkdtemp(prefix="srpl-segments-"))
    ws = Workspace(root / "ws")
    combos = [
        (float(mp), float(p), float(mc), dec)
        for mp in str(args.min_pause).split(",")
        for p in str(args.switch_penalty).split(",")
        for mc in str(args.min_cluster).split(",")
        for dec in str(args.decision).split(",")
    ]
    cache = WindowCache(root / "window-cache")  # later settings reuse the first pass's windows
    rows: dict[tuple, list] = {c: [] for c in combos}
    clip_cache: dict[Path, np.ndarray] = {}
    for m in range(args.meetings):
        rng = np.random.default_rng(args.seed * 1000 + m)
        chosen = [speakers[i] for i in rng.permutation(len(speakers))[:6]]
        enrolled = chosen[:4]  # chosen[4:] are the strangers
        name = f"m{m}"
        tune_model(ws, name, enrolled, args.shots, args.method, root)
        pools = {}
        for s in chosen:
            clips = sorted((DATA / s).glob("*.flac"))[args.shots if s in enrolled else 0 :]
            pools[s] = np.concatenate([clip_cache.setdefault(c, trimmed(c)) for c in clips])
        wave, turns = make_meeting(rng, pools, args.minutes, args.turn, args.overlap)
        path = root / f"meeting-{m}.flac"
        sf.write(str(path), wave, SR, subtype="PCM_16")
        seg = load_segmenter(ws, name)
        for combo in combos:
            mp, p, mc, dec = combo
            params = SegmentParams(
                window_s=args.window,
                hop_s=args.hop,
                switch_penalty=p,
                pause_s=args.pause,
                min_pause_s=mp,
                min_cluster_s=mc,
                decision=dec,
            )
            t0, c0 = time.perf_counter(), time.process_time()
            result = identify_segments(
                path,
                seg.backend,
                seg.backbone,
                cluster_threshold=seg.cluster_threshold,
                params=params,
                cache=cache,
            )
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            row = score_meeting(turns, result, set(enrolled))
            row["cluster_threshold"] = seg.cluster_threshold
            if combo[1:] == combos[0][1:]:  # a first pass embeds (cache miss): timed
                row.update(speed=result.duration_s / wall, speed_cpu=result.duration_s / cpu)
            rows[combo].append(row)
            print(
                f"meeting {m} min-pause {mp:g} penalty {p:g} min-cluster {mc:g} {dec}: {row['duration_s']:.0f} s, {row['n_turns']} turns, IER "
                f"{100 * row['ier']:.1f} % (miss {100 * row['missed']:.1f}, fa {100 * row['false_alarm']:.1f}, "
                f"conf {100 * row['confusion']:.1f}), unknown named {100 * row['unknown_named']:.1f} %, turns "
                f"{100 * row['turn_accuracy']:.0f} %, strangers {row['n_unknown_clusters']} (DER "
                f"{100 * row['stranger_der']:.0f} %, tau {seg.cluster_threshold:.3f})"
                + (
                    f", {row['speed']:.0f}x real time ({row['speed_cpu']:.0f}x per CPU-second)"
                    if "speed" in row
                    else ""
                ),
                flush=True,
            )
    keys = [
        "ier",
        "missed",
        "false_alarm",
        "confusion",
        "unknown_named",
        "turn_accuracy",
        "stranger_der",
        "overlapped",
    ]
    summaries = {}
    print(
        f"\n{args.meetings} meetings, seed {args.seed}, turns {args.turn}, overlap {args.overlap} s, "
        f"window {args.window} s, hop {args.hop} s:"
    )
    for (mp, p, mc, dec), rs in rows.items():
        summary = {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs]))) for k in keys}
        summary["clusters"] = [r["n_unknown_clusters"] for r in rs]
        print(
            f" min-pause {mp:g} switch penalty {p:g} min-cluster {mc:g} decision {dec}: "
            + ", ".join(f"{k} {100 * summary[k][0]:.2f} +- {100 * summary[k][1]:.2f} %" for k in keys)
        )
        print(f"   stranger clusters per meeting (true 2): {summary['clusters']}")
        summaries[f"min_pause={mp:g},penalty={p:g},min_cluster={mc:g},decision={dec}"] = summary
    timed = [r for rs in rows.values() for r in rs if "speed" in r]
    for k in ("speed", "speed_cpu"):
        v = [r[k] for r in timed]
        print(f" {k}: {np.mean(v):.1f}x +- {np.std(v):.1f} (min {np.min(v):.1f}x)")
    return {"rows": {str(k): v for k, v in rows.items()}, "summary": summaries, "root": str(root)}


# ---------------------------------------------------------------- long recordings: speed and memory
def _rss_mb() -> float:
    """Current resident memory of this process (Linux /proc), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(path: str, ws: str, model: str) -> None:
    """Run identify_segments once (no cache); print wall time and memory (sampled every 0.1 s) as JSON."""
    import threading

    import torch

    torch.set_num_threads(int(os.environ.get("SRPL_BENCH_THREADS", "2")))
    from srpl_cli.segments import identify_segments, load_segmenter
    from srpl_cli.workspace import Workspace

    seg = load_segmenter(Workspace(ws), model)
    before = _rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    r = identify_segments(path, seg.backend, seg.backbone, cluster_threshold=seg.cluster_threshold)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mb())
    print(
        json.dumps(
            {
                "duration_s": r.duration_s,
                "wall_s": wall,
                "rss_before_mb": before,
                "peak_rss_mb": peak[0],
                "growth_mb": peak[0] - before,
                "segments": len(r.segments),
            }
        )
    )


def run_long(args) -> dict:
    import soundfile as sf

    speakers = sorted(p.name for p in DATA.iterdir() if p.is_dir())
    root = Path(tempfile.mkdtemp(prefix="srpl-segments-long-"))
    from srpl_cli.workspace import Workspace

    ws = Workspace(root / "ws")
    tune_model(ws, "long", speakers[:4], args.shots, args.method, root)
    pools = {s: np.concatenate([trimmed(c) for c in sorted((DATA / s).glob("*.flac"))]) for s in speakers}
    out = {}
    for minutes in (10, args.long):
        path = root / f"long-{minutes}.flac"
        rng = np.random.default_rng(args.seed)
        with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as fh:
            written = 0
            while written < minutes * 60 * SR:  # 4-minute meetings back to back (material reused)
                wave, _ = make_meeting(rng, pools, 4.0, args.turn, 0.0)
                fh.write(wave)
                written += len(wave)
        cmd = [sys.executable, __file__, "--child", str(path), str(ws.root), "long"]
        res = subprocess.run(
            cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        fig = json.loads(res.stdout.strip().splitlines()[-1])
        fig["speed"] = fig["duration_s"] / fig["wall_s"]
        print(
            f"{minutes:3g} min: {fig['speed']:.1f}x real time ({fig['wall_s']:.0f} s), memory "
            f"{fig['rss_before_mb']:.0f} MB after loading, peak {fig['peak_rss_mb']:.0f} MB during the pass "
            f"(+{fig['growth_mb']:.0f} MB), {fig['segments']} segments",
            flush=True,
        )
        out[minutes] = fig
        path.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meetings", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--turn", default="3,15", help="turn length range in seconds, 'MIN,MAX'")
    ap.add_argument("--overlap", type=float, default=0.0, help="turns start up to S s before the last ends")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--method", default=None, help="tune method (default: srpl's default)")
    ap.add_argument("--window", type=float, default=None)
    ap.add_argument("--hop", type=float, default=None)
    ap.add_argument("--switch-penalty", default=None, help="one value or a list: 0,1,2,4")
    ap.add_argument("--pause", type=float, default=None)
    ap.add_argument("--min-pause", default=None, help="one value or a list")
    ap.add_argument("--min-cluster", default=None, help="one value or a list")
    ap.add_argument("--decision", default=None, help="segment, window or both: segment,window")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--long", type=float, default=0, help="also time a recording this many minutes long")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    if not DATA.exists():
        sys.exit(f"real data not found at {DATA}")
    import torch

    from srpl_cli.pipeline import DEFAULT_METHOD
    from srpl_cli.segments import SegmentParams

    torch.set_num_threads(args.threads)
    os.environ["SRPL_BENCH_THREADS"] = str(args.threads)
    d = SegmentParams()
    args.method = args.method or DEFAULT_METHOD
    args.window = d.window_s if args.window is None else args.window
    args.hop = d.hop_s if args.hop is None else args.hop
    args.switch_penalty = d.switch_penalty if args.switch_penalty is None else args.switch_penalty
    args.pause = d.pause_s if args.pause is None else args.pause
    args.min_pause = d.min_pause_s if args.min_pause is None else args.min_pause
    args.min_cluster = d.min_cluster_s if args.min_cluster is None else args.min_cluster
    args.decision = d.decision if args.decision is None else args.decision
    args.turn = tuple(float(x) for x in args.turn.split(","))
    figures = {"args": {k: v for k, v in vars(args).items() if k not in ("json", "child")}}
    if args.meetings:
        figures["meetings"] = run_meetings(args)
    if args.long:
        figures["long"] = run_long(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
