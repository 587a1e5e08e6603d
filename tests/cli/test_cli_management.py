"""`srpl speakers`, `srpl models`, `srpl info`, help at 80 columns, completion, evaluate's table and plots."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.cli.test_cli import _embedding_dataset
from tests.conftest import shared_path


def srpl(*args, env: dict | None = None, columns: int = 200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "srpl_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SRPL_NO_PROGRESS": "1", "COLUMNS": str(columns), **(env or {})},
    )


@pytest.fixture(scope="module")
def tuned_ws(tmp_path_factory):
    from srpl_cli import pipeline
    from srpl_cli.workspace import Workspace

    root = shared_path("librispeech-mini", "speakers")
    dirs = sorted(root.iterdir())
    enroll = tmp_path_factory.mktemp("enroll")
    for d in dirs[:3]:
        (enroll / d.name).mkdir()
        for p in sorted(d.glob("*.flac"))[:3]:
            (enroll / d.name / p.name).symlink_to(p)
    ws = tmp_path_factory.mktemp("ws")
    pipeline.tune(enroll, Workspace(ws), shots=3, backbone="dvector")
    return ws, dirs


def test_speakers_and_models_commands(tuned_ws, tmp_path):
    src, dirs = tuned_ws
    ws = tmp_path / "ws"
    shutil.copytree(src, ws, symlinks=True)
    r = srpl("speakers", "list", "--json", "-w", ws)
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert [s["name"] for s in listing["speakers"]] == [d.name for d in dirs[:3]] and listing[
        "version"
    ] == "v0001"
    r = srpl("speakers", "add", "grandma", dirs[3], "--json", "-w", ws)
    assert r.returncode == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["version"] == "v0002" and added["clips_used"] == 3 and "grandma" in added["speakers"]
    r = srpl("speakers", "rename", "grandma", "nana", "-w", ws, columns=80)
    assert r.returncode == 0 and "renamed grandma to nana" in r.stdout and "v0003" in r.stdout
    r = srpl("speakers", "remove", dirs[0].name, "-w", ws)
    assert r.returncode == 0, r.stderr
    r = srpl("models", "list", "--json", "-w", ws)
    models = json.loads(r.stdout)
    assert models[0]["current"] == "v0004" and [v["version"] for v in models[0]["versions"]] == [
        "v0001",
        "v0002",
        "v0003",
        "v0004",
    ]
    r = srpl("models", "list", "-w", ws, columns=80)
    assert r.returncode == 0 and "v0004 *" in r.stdout and max(map(len, r.stdout.splitlines())) <= 80
    r = srpl("models", "show", "--json", "-w", ws)
    shown = json.loads(r.stdout)
    assert shown["version"] == "v0004" and shown["tune"]["refit"]["action"] == "remove"
    r = srpl("models", "show", "-w", ws, columns=80)
    assert r.returncode == 0 and "remove " + dirs[0].name in r.stdout
    r = srpl("models", "remove", "v0004", "-w", ws)
    assert r.returncode == 4 and "is in use" in r.stderr and "srpl models use v0003" in r.stderr
    r = srpl("models", "use", "v0001", "-w", ws)
    assert r.returncode == 0 and "now uses v0001" in r.stdout
    r = srpl("identify", sorted(dirs[0].glob("*.flac"))[-1], "--json", "-w", ws)
    assert json.loads(r.stdout)["speaker"] == dirs[0].name  # v0001 knows them again
    r = srpl("models", "remove", "v0004", "--json", "-w", ws)
    assert r.returncode == 0 and json.loads(r.stdout) == {"model": "default", "removed": "v0004"}
    r = srpl("speakers", "remove", "nobody", "-w", ws)
    assert r.returncode == 4 and r.stderr.startswith("error: model 'default' v0001 has no speaker 'nobody'")
    assert "Traceback" not in r.stderr


def test_nothing_tuned_hint_names_an_offline_backbone(tmp_path):
    for args in (("identify", tmp_path), ("speakers", "list")):
        r = srpl(*args, "-w", tmp_path / "ws")
        assert r.returncode == 4
        assert (
            "hint: run: srpl tune ENROLL_DIR --shots 5 --backbone dvector" in r.stderr
        )  # eres2netv2 not cached


def test_info_json_and_table(tuned_ws):
    ws, _ = tuned_ws
    r = srpl("info", "--json", "-w", ws)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["libraries"]["torch"] and info["device"].startswith(("cpu", "cuda"))
    assert info["workspace"]["path"] == str(ws) and info["workspace"]["size_bytes"] > 0
    assert info["workspace"]["models"] == {"default": "v0001"} and info["workspace"]["speakers"] == {
        "dvector": 3
    }
    bb = {b["name"]: b for b in info["backbones"]}
    assert bb["dvector"]["offline"] and bb["dvector"]["weights"].endswith("pretrained.pt")
    assert not bb["eres2netv2"]["offline"] and "srpl download --model eres2netv2" in bb["eres2netv2"]["note"]
    assert {c["name"] for c in info["caches"]} == {"embeddings", "huggingface", "modelscope"}
    assert info["offline_flags"]["SRPL_OFFLINE"] == "1"
    r = srpl("info", "-w", ws, columns=80)
    assert r.returncode == 0 and "dvector" in r.stdout and max(map(len, r.stdout.splitlines())) <= 80


COMMANDS = [
    "download",
    "synthesize",
    "enroll",
    "tune",
    "identify",
    "evaluate",
    "info",
    "speakers",
    "speakers add",
    "speakers list",
    "models",
    "models show",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_well_at_80_columns(command):
    r = srpl(*command.split(), "--help", columns=80)
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "<bool>" not in text and "<list[" not in text and "{" not in text.split("\n", 3)[1]
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    # examples all start at the same column in every command
    examples = [line for line in lines if re.match(r"^\s+srpl ", line)]
    assert examples and {len(e) - len(e.lstrip()) for e in examples} == {3}
    # prose re-wraps: no short line followed by a line that would have fitted on it (ragged breaks)
    body = text.split("╭")[0].splitlines()
    for a, b in zip(body, body[1:]):
        if a.strip() and b.strip() and not re.match(r"^\s+(srpl|--)", b) and not a.rstrip().endswith("\\"):
            first = b.strip().split(" ")[0]
            assert len(a.rstrip()) + 1 + len(first) > 78, (a, b)


def test_usage_line_names_arguments_as_the_text_does():
    r = srpl("tune", "--help", columns=80)
    assert "Usage: srpl tune [OPTIONS] ENROLL_DIR" in r.stdout
    r = srpl("identify", "--help", columns=80)
    assert "Usage: srpl identify [OPTIONS] CLIPS..." in r.stdout
    r = srpl("tune", columns=80, env={"SRPL_WORKSPACE": "/nonexistent"})
    assert "ENROLL_DIR" in r.stdout + r.stderr


def test_quiet_everywhere_and_defaults_shown():
    for command in ("download", "enroll", "tune", "identify", "evaluate", "synthesize", "speakers add"):
        assert "--quiet" in srpl(*command.split(), "--help").stdout, command
    text = srpl("evaluate", "--help").stdout
    assert "default: 5 with folds" in text and "default: half the speakers" in text
    assert "default: 10 for audio folders" in text
    assert "(default: all)" in srpl("synthesize", "--help").stdout


def test_shell_completion_installs_and_completes(tmp_path):
    r = srpl("--install-completion", "bash", env={"HOME": str(tmp_path), "SHELL": "/bin/zsh"})
    assert r.returncode == 0, r.stderr  # the named shell wins over the detected one and $SHELL
    assert "_SRPL_COMPLETE" in (tmp_path / ".bash_completions" / "srpl.sh").read_text()
    assert "srpl.sh" in (tmp_path / ".bashrc").read_text()
    r = srpl(env={"_SRPL_COMPLETE": "complete_bash", "COMP_WORDS": "srpl spe", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["speakers"]
    r = srpl(env={"_SRPL_COMPLETE": "complete_bash", "COMP_WORDS": "srpl models ", "COMP_CWORD": "2"})
    assert set(r.stdout.split()) == {"list", "show", "use", "remove"}


def test_completion_for_a_named_shell_and_a_clear_error_for_an_unknown_one(tmp_path):
    r = srpl("--install-completion", "zsh", env={"HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "_SRPL_COMPLETE" in (tmp_path / ".zfunc" / "_srpl").read_text()
    assert "compinit" in (tmp_path / ".zshrc").read_text()
    r = srpl("--show-completion", "fish")
    assert r.returncode == 0 and "complete --command srpl" in r.stdout
    r = srpl("--install-completion", "tcsh", env={"HOME": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.startswith("error: 'tcsh' is not a supported shell")


def test_completion_that_cannot_write_its_files_is_a_clear_error(monkeypatch):
    from typer import _completion_shared

    from srpl_cli.cli import _completion
    from srpl_cli.errors import SrplError

    def read_only(**kwargs):
        raise PermissionError(13, "Permission denied", "/home/u/.bashrc")

    monkeypatch.setattr(_completion_shared, "install", read_only)
    with pytest.raises(SrplError, match="could not install bash completion: .*Permission denied"):
        _completion.run(["--install-completion", "bash"])


def test_completion_falls_back_to_dollar_shell_without_a_shell_ancestor(monkeypatch):
    """An IDE or a re-parented background job has no shell among its ancestors (Typer then fails)."""
    import shellingham

    from srpl_cli.cli import _completion

    def fail():
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", fail)
    monkeypatch.setenv("SHELL", "/usr/local/bin/fish")
    assert _completion._current_shell() == "fish"
    monkeypatch.delenv("SHELL")
    assert _completion._current_shell() == ""
    assert not _completion.handles(["tune", "--install-completion"])  # only the root options


def test_evaluate_table_fits_80_columns_and_says_what_it_leaves_out(tmp_path):
    _embedding_dataset(tmp_path / "ds")
    args = ["evaluate", "--data", tmp_path / "ds", "--folds", "4", "--known", "0-4", "--shots", "3"]
    args += ["--method", "anchored-cosine"]
    narrow = srpl(*args, columns=80)
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in narrow.stdout
    flat = " ".join(narrow.stdout.split())  # the caption wraps
    assert "OSCR" in flat and "ΔOSCR" in flat and "not shown at 80 columns: " in flat
    shown = flat.split("not shown")[0]
    assert ("FAR" in shown) == ("FRR" in shown)  # a threshold's two rates go together
    assert re.search(r"\+?-?\d+\.\d±\d+\.\d \(\d/4\)", narrow.stdout)  # the paired difference, whole
    wide = srpl(*args, columns=200)
    for label in ("ACC", "AUROC", "OSCR", "EER", "FAR", "FRR", "ΔACC"):
        assert label in wide.stdout
    assert "not shown" not in wide.stdout


def test_evaluate_plots_all_folds(tmp_path):
    pytest.importorskip("matplotlib")
    _embedding_dataset(tmp_path / "ds")
    r = srpl(
        "evaluate", "--data", tmp_path / "ds", "--folds", "3", "--known", "0-4", "--shots", "3",
        "--method", "anchored-cosine", "--plot", tmp_path / "plots",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("oscr_curve.png", "det_curve.png", "scores_cosine.png", "scores_anchored-cosine.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
