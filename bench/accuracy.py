"""Regenerate the tables of docs/accuracy.md with the real `srpl evaluate --folds 10` command.

Run: OMP_NUM_THREADS=1 python bench/accuracy.py OUT_DIR [--seeds 0,1,2,3]
Needs ../shared/data. Every protocol x fold seed is one `srpl evaluate ... --json` run, saved as
OUT_DIR/<protocol>_s<seed>.json (an existing file is reused, so an interrupted run resumes); then one
markdown table per seed is printed. Seeds 0 and 1 run every method, later seeds only cosine, as-norm
(where there is a cohort) and the default. About 25 minutes on 2 CPU cores, most of it faithful SRPL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
OTHERS = DATA / "librispeech-mini" / "others"

#: protocol -> (srpl evaluate arguments, cohort for as-norm or None)
PROTOCOLS: dict[str, tuple[list[str], Path | None]] = {
    "emodb": (
        [
            "--data",
            str(DATA / "emodb"),
            "--backbone",
            "dvector",
            "--known",
            "5",
            "--enroll-glob",
            "?????N?.flac",
        ],
        OTHERS,  # out of domain (English read speech vs German acted emotions), as in the issue
    ),
    "librispeech-mini": (
        [
            "--data",
            str(DATA / "librispeech-mini" / "speakers"),
            "--unknown-dir",
            str(OTHERS),
            "--backbone",
            "dvector",
            "--known",
            "5",
        ],
        None,  # its `others` are the unknown test speakers: no separate cohort exists
    ),
    "qspeech-wavlm": (["--data", str(DATA / "qspeech-wavlm"), "--known", "0-4"], None),
}


def run(protocol: str, seed: int, out_dir: Path, workspace: Path) -> dict:
    path = out_dir / f"{protocol}_s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    args, cohort = PROTOCOLS[protocol]
    methods = (
        ["cosine"] + (["as-norm"] if cohort else []) + (["srpl"] if seed < 2 else []) + ["anchored-cosine"]
    )
    cmd = [sys.executable, "-m", "srpl_cli", "evaluate", *args, "--folds", "10", "--shots", "5"]
    cmd += ["--seed", str(seed), "--method", ",".join(methods), "--workspace", str(workspace), "--json", "-q"]
    if cohort:
        cmd += ["--cohort", str(cohort)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{protocol} seed {seed}: {r.stderr.strip()}")
    path.write_text(r.stdout)
    return json.loads(r.stdout)


def table(results: dict[str, dict]) -> str:
    rows = [
        "| protocol | method | OSCR | ACC | AUROC | OSCR gain vs cosine | wins | FAR / FRR |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for protocol, report in results.items():
        for method, s in report["summary"].items():
            gain = s.get("oscr_vs_cosine")
            rows.append(
                f"| {protocol} | {method} | {s['oscr']['mean']:.1f} ± {s['oscr']['std']:.1f} | "
                f"{s['acc']['mean']:.1f} ± {s['acc']['std']:.1f} | {s['auroc']['mean']:.1f} ± {s['auroc']['std']:.1f} | "
                + (
                    f"{gain['mean']:+.1f} ± {gain['std']:.1f} | {gain['wins']}/{gain['folds']} | "
                    if gain
                    else "- | - | "
                )
                + f"{s['far']['mean']:.1f} / {s['frr']['mean']:.1f} |"
            )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seeds", default="0,1,2,3")
    a = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: missing (the real data lives in ../shared/data)")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in a.seeds.split(",")):
        results = {p: run(p, seed, a.out_dir, a.out_dir / "workspace") for p in PROTOCOLS}
        print(f"\nFold set seed {seed}\n\n{table(results)}", flush=True)


if __name__ == "__main__":
    main()
