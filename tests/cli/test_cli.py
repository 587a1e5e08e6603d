"""The `srpl` command itself: help, version, lazy imports, one-line errors with exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from srpl_cli._version import __version__
from srpl_cli.cli import app

COMMANDS = ["download", "synthesize", "enroll", "tune", "identify", "evaluate"]


def srpl(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real installed command."""
    return subprocess.run(
        [sys.executable, "-m", "srpl_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SRPL_NO_PROGRESS": "1", "COLUMNS": "200", **(env or {})},
    )


def test_version():
    r = srpl("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"srpl {__version__}"


def test_help_lists_every_command():
    r = srpl("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command):
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    assert "Example" in r.output and f"srpl {command}" in r.output


def test_cli_import_is_light():
    code = "import sys, srpl_cli.cli; heavy = [m for m in ('torch', 'torchaudio', 'transformers', 'modelscope', 'matplotlib') if m in sys.modules]; print(heavy)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]"


def test_usage_error_is_one_line(tmp_path):
    r = srpl("evaluate", "--data", str(tmp_path), "--dataset", "x")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: give exactly one of --data DIR or --dataset NAME"
    assert "Traceback" not in r.stderr


def test_parse_errors_are_one_line_not_boxed_usage():
    r = srpl("tune", "--shots", "abc", "somewhere")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: Invalid value for '--shots'")
    assert lines[1:] == ["hint: run 'srpl tune --help' for usage"]
    r = srpl("nosuch")
    assert r.returncode == 2 and r.stderr.startswith("error: No such command 'nosuch'")
    assert "╭" not in r.stderr and "Traceback" not in r.stderr


def test_bare_command_shows_its_help():
    r = srpl("tune")
    assert r.returncode == 2 and "Usage: srpl tune" in r.stdout + r.stderr


@pytest.mark.parametrize("raised", ["KeyboardInterrupt", "typer.Abort"])
def test_interrupt_says_so_and_exits_130(raised):
    # Ctrl-C inside a command: Typer turns it into a silent exit 130; main() must name it.
    code = (
        "import typer, srpl_cli.cli as cli\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        f"def run():\n    raise {raised}()\n"
        "cli.app = app\n"
        "cli.main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 130 and r.stderr.strip() == "interrupted"


def test_identify_without_model_says_what_to_do(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(b"")
    r = srpl("identify", str(clip), "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 4
    assert "no tuned model" in r.stderr and "srpl tune" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_enroll_dir(tmp_path):
    r = srpl("enroll", str(tmp_path / "nope"), "--backbone", "dvector", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 3 and "no such directory" in r.stderr and "Traceback" not in r.stderr


def test_unknown_method_and_backbone(tmp_path):
    r = srpl("tune", str(tmp_path), "--method", "magic", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 2 and "unknown method 'magic'" in r.stderr
    r = srpl("enroll", str(tmp_path), "--backbone", "nope", "--workspace", str(tmp_path / "ws"))
    assert "Traceback" not in r.stderr and r.returncode in (2, 3)


def _embedding_dataset(root, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, dim))
    for split, speakers, n in (
        ("emb_train", range(5), 6),
        ("emb_test", list(range(5)) + list(range(20, 25)), 10),
        ("emb_train_unknown_control", range(25, 28), 5),
    ):
        for s in speakers:
            d = root / split / str(s)
            d.mkdir(parents=True)
            for i in range(n):
                np.save(d / f"{i}.npy", (centers[s] + 0.6 * rng.normal(size=dim)).astype(np.float32)[None])


def test_evaluate_fixed_split_json(tmp_path):
    _embedding_dataset(tmp_path / "ds")
    r = srpl("evaluate", "--data", str(tmp_path / "ds"), "--method", "cosine", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("acc", "auroc", "oscr", "oscr_legacy", "eer", "min_dcf"):
        assert key in out
    assert out["acc"] > 90 and out["oscr"] > 80 and 0 <= out["min_dcf"] <= 1


def test_evaluate_folds_json_and_table(tmp_path):
    _embedding_dataset(tmp_path / "ds")
    args = [
        "evaluate",
        "--data",
        str(tmp_path / "ds"),
        "--folds",
        "4",
        "--known",
        "0-4",
        "--shots",
        "3",
        "--method",
        "cosine",
        "--no-calibrate",
    ]
    r = srpl(*args, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["folds"] == 4 and "cosine" in report["summary"]
    assert len(report["per_fold"]) == 4
    r = srpl(*args)
    assert r.returncode == 0 and "±" in r.stdout and "ΔOSCR" in r.stdout and "cosine" in r.stdout


def test_evaluate_as_norm_with_a_cohort(tmp_path):
    """The AS-norm baseline: its cohort reaches only it; without one, a usage error before any fitting."""
    _embedding_dataset(tmp_path / "ds")
    rng = np.random.default_rng(3)
    for s in range(40, 46):  # other people, never tested
        (tmp_path / "others" / str(s)).mkdir(parents=True)
        for i in range(3):
            np.save(tmp_path / "others" / str(s) / f"{i}.npy", rng.normal(size=(1, 16)).astype(np.float32))
    args = ["evaluate", "--data", str(tmp_path / "ds"), "--folds", "3", "--known", "0-4", "--shots", "3"]
    r = srpl(*args, "--method", "as-norm", "--cohort", str(tmp_path / "others"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report["summary"]) == {"cosine", "as-norm"} and report["protocol"]["cohort"] == 18
    assert report["summary"]["as-norm"]["acc"]["mean"] > 80
    r = srpl(*args, "--method", "as-norm")
    assert r.returncode == 2 and "--cohort DIR for `srpl evaluate`" in r.stderr
    r = srpl(*args, "--method", "as-norm", "--cohort", str(tmp_path / "nope"))
    assert r.returncode == 3 and "no such directory (--cohort)" in r.stderr
    r = srpl("tune", str(tmp_path), "--method", "as-norm", "--workspace", str(tmp_path / "ws"))
    assert r.returncode == 2 and "--unknown-dir DIR for `srpl tune`" in r.stderr


def test_evaluate_plots(tmp_path):
    pytest.importorskip("matplotlib")
    _embedding_dataset(tmp_path / "ds")
    r = srpl(
        "evaluate", "--data", str(tmp_path / "ds"), "--method", "cosine", "--plot", str(tmp_path / "plots")
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "plots" / "oscr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "plots" / "scores_cosine.png").is_file()


def test_evaluate_bad_counts_and_plot_dir_are_usage_errors(tmp_path):
    _embedding_dataset(tmp_path / "ds")
    base = ("evaluate", "--data", str(tmp_path / "ds"), "--method", "cosine")
    r = srpl(*base, "--folds", "0")  # used to run the fixed split silently (audio data: 10 folds)
    assert r.returncode == 2 and r.stderr.strip() == "error: --folds must be at least 1"
    r = srpl(*base, "--shots", "0", "--known", "0-4")  # used to end in "error: X is empty" (exit 3)
    assert r.returncode == 2 and r.stderr.strip() == "error: --shots must be at least 1"
    r = srpl(*base, "--unknown-dir", str(tmp_path))  # was silently ignored on embedding datasets
    assert r.returncode == 2 and "apply to audio folders" in r.stderr
    (tmp_path / "afile").write_text("")
    r = srpl(*base, "--plot", str(tmp_path / "afile"))  # used to be an internal FileExistsError
    assert r.returncode == 2 and "--plot" in r.stderr and "Traceback" not in r.stderr


def test_bracketed_paths_summary_and_broken_tune_json(tmp_path):
    import shutil

    from tests.conftest import shared_path

    speakers = shared_path("librispeech-mini", "speakers")
    enroll = tmp_path / "enroll"
    for spk in sorted(p.name for p in speakers.iterdir())[:3]:
        (enroll / spk).mkdir(parents=True)
        for clip in sorted((speakers / spk).iterdir())[:2]:
            shutil.copy(clip, enroll / spk / clip.name)
    ws = str(tmp_path / "ws")
    r = srpl("tune", str(enroll), "--shots", "5", "--backbone", "dvector", "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "3 speakers x 2 clips" in r.stdout  # clips actually used, not the --shots asked for
    odd = tmp_path / "in[/x]" / "[bold]a.flac"  # rich markup in a path: was a MarkupError / mangled name
    odd.parent.mkdir(parents=True)
    shutil.copy(next((enroll).rglob("*.flac")), odd)
    (odd.parent / "[red]bad.wav").write_text("junk")
    r = srpl("identify", str(odd.parent), "--workspace", ws)
    assert r.returncode == 0, r.stderr
    assert "[bold]a.flac" in r.stdout and "[red]bad.wav" in r.stderr
    tune_json = next((tmp_path / "ws" / "models" / "default").glob("v*/tune.json"))
    tune_json.write_text("{}")
    r = srpl("identify", str(odd), "--workspace", ws)
    assert r.returncode == 4 and "tune.json" in r.stderr and "Traceback" not in r.stderr


def test_relative_backbone_path_still_works_from_another_directory(tmp_path):
    import shutil

    from srpl_cli.backbones.dvector import packaged_weights
    from tests.conftest import shared_path

    speakers = shared_path("librispeech-mini", "speakers")
    weights = packaged_weights()
    if weights is None:
        pytest.skip("resemblyzer weights not installed")
    (tmp_path / "w").mkdir()
    shutil.copy(weights, tmp_path / "w" / weights.name)
    enroll = tmp_path / "enroll"
    for spk in sorted(p.name for p in speakers.iterdir())[:2]:
        (enroll / spk).mkdir(parents=True)
        for clip in sorted((speakers / spk).iterdir())[:2]:
            shutil.copy(clip, enroll / spk / clip.name)
    env = {**os.environ, "SRPL_NO_PROGRESS": "1", "SRPL_WORKSPACE": str(tmp_path / "ws")}
    run = [sys.executable, "-m", "srpl_cli"]
    r = subprocess.run(
        [*run, "tune", "enroll", "--backbone", "dvector", "--backbone-path", "w"],
        cwd=tmp_path, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    clip = next(enroll.rglob("*.flac"))
    # tune.json stored "w" as given: identify from elsewhere then looked for ./w and failed
    r = subprocess.run([*run, "identify", str(clip)], cwd="/", capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


def test_collect_audio_can_record_empty_folders(tmp_path):
    """A folder without audio among identify's arguments is reported; the other clips go on."""
    from srpl_cli.datasets import collect_audio

    (tmp_path / "empty").mkdir()
    problems = []
    assert collect_audio([tmp_path / "empty", tmp_path / "x.wav"], problems) == [tmp_path / "x.wav"]
    assert problems == [(tmp_path / "empty", "no audio files in this directory")]


def test_atomic_files_get_the_usual_mode(tmp_path):
    import stat

    from srpl_cli._io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "f.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
