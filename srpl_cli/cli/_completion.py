"""`srpl --install-completion [SHELL]` and `--show-completion [SHELL]`: a named shell, or a fallback.

Typer's own options take no shell name (the name after them is ignored and the detected shell's
script installed) and fail with "Shell None is not supported" when the process has no shell among its
ancestors (an IDE, cron, a re-parented background job). Here a named shell wins, then the detected
one, then ``$SHELL``; the scripts and files are Typer's own (``typer._completion_shared``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from srpl_cli.errors import SrplError, UsageError

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
OPTIONS = ("--install-completion", "--show-completion")
PROG = "srpl"
COMPLETE_VAR = "_SRPL_COMPLETE"


def handles(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (without the program name) is a completion request this module answers."""
    return len(argv) in (1, 2) and argv[0] in OPTIONS


def run(argv: Sequence[str]) -> None:
    """Install or print the completion script for the shell ``argv`` names (or the detected one)."""
    from typer import _completion_shared as typer_completion

    shell = argv[1].lower() if len(argv) == 2 else _current_shell()
    if shell not in SHELLS:
        named = (
            f"'{argv[1]}'" if len(argv) == 2 else "your shell could not be detected and $SHELL is unset; it"
        )
        raise UsageError(f"{named} is not a supported shell; name one of: {', '.join(SHELLS)}")
    if argv[0] == "--show-completion":
        script = typer_completion.get_completion_script(
            prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell
        )
        sys.stdout.write(script.rstrip("\n") + "\n")
        return
    try:  # writes the script and a line in the shell's startup file (~/.bashrc, ~/.zshrc, ...)
        _, path = typer_completion.install(shell=shell, prog_name=PROG, complete_var=COMPLETE_VAR)
    except OSError as exc:
        raise SrplError(f"could not install {shell} completion: {exc}") from None
    print(f"{shell} completion installed in {path}; open a new shell to use it")


def _current_shell() -> str:
    """The shell among this process's ancestors (shellingham, as Typer does), else ``$SHELL``'s name."""
    import shellingham

    try:
        return shellingham.detect_shell()[0].lower()
    except (shellingham.ShellDetectionFailure, RuntimeError):
        return Path(os.environ.get("SHELL", "")).name.lower()
