"""Regenerate the tables of docs/accuracy.md with the real `srpl evaluate --folds 10` command.

Run: OMP_NUM_THREADS=1 python bench/accuracy.py OUT_DIR [--seeds 0,1,2,3] [--pool-only] [--no-srpl]
Needs ../shared/data. Every protocol x fold seed x {no pool, pool} is one `srpl evaluate ... --json`
run, saved as OUT_DIR/<protocol>_s<seed>[_pool].json (an existing file is reused, so an interrupted
run resumes); then one markdown table per seed is printed.

- no pool: the whole test set; cosine, as-norm (where there is a cohort), srpl (seeds 0 and 1 only,
  unless --no-srpl) and anchored-cosine (tune's default without a pool);
- pool: `--unlabeled-share 0.5` (half of each fold's test clips become the unlabeled pool, every method
  is scored on the other half); cosine (no pool, today's calibration: the reference), anchored-cosine
  (pool-calibrated threshold) and the pool methods (pool-propagation; srpl-v2 when registered).

About 15 minutes on 2 CPU cores with --no-srpl (faithful SRPL adds about 10).
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


def pool_methods() -> list[str]:
    """The registered methods that learn from a pool (the pool default first)."""
    from srpl_cli.backends import BACKENDS, backend_class
    from srpl_cli.pipeline import DEFAULT_POOL_METHOD

    pooled = [m for m in BACKENDS if backend_class(m).uses_pool or m == "srpl-v2"]
    return [DEFAULT_POOL_METHOD] + [m for m in pooled if m != DEFAULT_POOL_METHOD]


def run(protocol: str, seed: int, out_dir: Path, workspace: Path, pool: bool, srpl: bool = True) -> dict:
    path = out_dir / f"{protocol}_s{seed}{'_pool' if pool else ''}.json"
    if path.is_file():
        return json.loads(path.read_text())
    args, cohort = PROTOCOLS[protocol]
    if pool:
        methods = ["cosine", "anchored-cosine", *pool_methods()]
        cohort = None
    else:
        methods = ["cosine"] + (["as-norm"] if cohort else []) + (["srpl"] if seed < 2 and srpl else [])
        methods += ["anchored-cosine"]
    cmd = [sys.executable, "-m", "srpl_cli", "evaluate", *args, "--folds", "10", "--shots", "5"]
    cmd += ["--seed", str(seed), "--method", ",".join(methods), "--workspace", str(workspace), "--json", "-q"]
    if cohort:
        cmd += ["--cohort", str(cohort)]
    if pool:
        cmd += ["--unlabeled-share", "0.5"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{protocol} seed {seed}: {r.stderr.strip()}")
    path.write_text(r.stdout)
    return json.loads(r.stdout)


def table(results: dict[tuple[str, bool], dict]) -> str:
    rows = [
        "| protocol | pool | method | OSCR | ACC | OSCR gain vs cosine (wins) | BE at threshold | BE oracle "
        "| BE / cosine's (folds worse) | FAR / FRR |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (protocol, pool), report in results.items():
        for method, s in report["summary"].items():
            gain = s.get("oscr_vs_cosine")
            ratio = s.get("balanced_error_vs_cosine")
            uses = "half" if pool and method != "cosine" else "-"
            rows.append(
                f"| {protocol} | {uses} | {method} | {s['oscr']['mean']:.1f} ± {s['oscr']['std']:.1f} | "
                f"{s['acc']['mean']:.1f} ± {s['acc']['std']:.1f} | "
                + (
                    f"{gain['mean']:+.1f} ± {gain['std']:.1f} ({gain['wins']}/{gain['folds']}) | "
                    if gain
                    else "- | "
                )
                + f"{s['balanced_error']['mean']:.1f} ± {s['balanced_error']['std']:.1f} | "
                f"{s['balanced_error_oracle']['mean']:.1f} | "
                + (f"{ratio['ratio']:.2f} ({ratio['worse']}) | " if ratio else "- | ")
                + f"{s['far']['mean']:.1f} / {s['frr']['mean']:.1f} |"
            )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seeds", default="0,1,2,3")
    ap.add_argument("--pool-only", action="store_true", help="only the --unlabeled-share 0.5 runs")
    ap.add_argument("--no-srpl", action="store_true", help="skip faithful SRPL (the slow part)")
    a = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: missing (the real data lives in ../shared/data)")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    ws = a.out_dir / "workspace"
    for seed in (int(s) for s in a.seeds.split(",")):
        results = {}
        for p in PROTOCOLS:
            for pool in (True,) if a.pool_only else (False, True):
                results[(p, pool)] = run(p, seed, a.out_dir, ws, pool, not a.no_srpl)
        print(f"\nFold set seed {seed}\n\n{table(results)}", flush=True)


if __name__ == "__main__":
    main()
