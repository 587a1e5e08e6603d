"""The `srpl` command: assembles the sub-commands and turns errors into one line + exit code.

Each command lives in its own module and only parses, calls ``srpl_cli.pipeline`` and renders.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from srpl_cli._version import __version__

app = typer.Typer(
    name="srpl",
    help="Few-shot open-set speaker identification: enroll a few clips per person, then tell who is "
    "speaking [b]or that it is nobody you know[/b] (Speaker Reciprocal Points Learning).",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"srpl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv: debug)."),
) -> None:
    _setup_logging(verbose)


def _setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    from srpl_cli.cli._output import err

    logger = logging.getLogger("srpl_cli")
    logger.handlers[:] = [RichHandler(console=err, show_time=False, show_path=False)]
    logger.propagate = False
    logger.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)


def _register() -> None:
    from srpl_cli.cli import (
        download,
        enroll,
        evaluate,
        export,
        identify,
        info,
        models,
        serve,
        speakers,
        synthesize,
        tune,
    )

    commands = (download, synthesize, enroll, tune, identify, evaluate, export, speakers, models, info, serve)
    for module in commands:
        module.register(app)
    from srpl_cli.cli._help import polish

    polish(app)


_register()


def main() -> None:
    """Console entry point: run the app; expected failures print one line, never a traceback.

    Typer runs non-standalone so that its parse errors, aborts and interrupts come back here and are
    rendered like every other error (one ``error:`` line and a hint) instead of its boxed usage.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort

    from srpl_cli.errors import SrplError

    debug = bool(os.environ.get("SRPL_DEBUG"))
    try:
        from srpl_cli.cli import _completion

        if _completion.handles(sys.argv[1:]):  # a named shell, or $SHELL where none is detected
            _completion.run(sys.argv[1:])
            return
        code = app(prog_name="srpl", standalone_mode=False)
    except SrplError as exc:
        if debug:
            raise
        _fail(f"error: {exc.message}", exc.hint, exc.exit_code)
    except NoArgsIsHelpError as exc:  # `srpl tune` alone: the command's help is the answer
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        sys.exit(exc.exit_code)
    except ClickException as exc:  # bad option value, unknown command, missing argument
        ctx = getattr(exc, "ctx", None)
        hint = f"run '{ctx.command_path} --help' for usage" if ctx is not None else None
        _fail(f"error: {exc.format_message()}", hint, exc.exit_code)
    except (KeyboardInterrupt, Abort):
        _fail("interrupted", None, 130)
    except MemoryError:
        _fail("error: out of memory", "use fewer or shorter clips", 1)
    except Exception as exc:  # noqa: BLE001 - last resort: one line, details on demand
        if debug:
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc}", "run again with SRPL_DEBUG=1 for the traceback", 1
        )
    else:
        # Typer turns Ctrl-C into exit code 130 without a word; say what happened.
        if code == 130:
            _fail("interrupted", None, 130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, hint: str | None, code: int) -> None:
    from srpl_cli.cli._output import err

    err.print(message, markup=False, highlight=False, soft_wrap=True)
    if hint:
        err.print(f"hint: {hint}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)
