"""Help text that reads well at 80 columns: paragraphs re-wrap, examples keep their indentation, flags
show no ``<bool>`` placeholder, arguments read ``ENROLL_DIR`` / ``CLIPS...`` in usage and panels alike.

Typer renders help with rich but keeps a docstring's hard line breaks (ragged lines at any width other
than the one the text was typed for), strips a common indentation that makes some commands' examples
flush-left and others indented, prints flags as ``--json <bool>`` and required arguments as
``{enroll_dir}``. ``polish(app)`` fixes all of that in one place, through Typer's documented ``cls=``
hook (custom command and group classes), so command modules keep writing plain help strings.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

#: rich renders an empty markup pair as nothing, and inspect.cleandoc sees a line that starts at column 0
_KEEP_INDENT = "[b][/b]"


def reflow(text: str | None) -> str | None:
    """Join the lines of each prose paragraph (rich then wraps it to the terminal); keep indented lines
    (examples) as they are, at the same indentation in every command."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.split("\n")
        if any(line.startswith((" ", "\t")) for line in lines) or para.startswith("\b"):
            out.append(
                "\n".join(_KEEP_INDENT + line if line.startswith((" ", "\t")) else line for line in lines)
            )
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _polish_param(param: Any) -> None:
    if getattr(param, "_srpl_polished", False):
        return
    param._srpl_polished = True
    if isinstance(param, TyperOption) or getattr(param, "is_flag", False):
        if getattr(param, "is_flag", False) and not getattr(param, "count", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: no "<bool>"
    elif isinstance(param, TyperArgument):
        if param.metavar is None:
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
    if param.nargs != 1 or getattr(param, "multiple", False):
        # "<list[Path]>" -> "<path>": the name column already says CLIPS... (several), and a repeatable
        # option says "Repeatable" in its help
        shown = param.display_type(None)
        match = re.fullmatch(r"<list\[(\w+)\]>", shown or "")
        if match:
            label = f"<{match.group(1).lower()}>"
            param.display_type_rich = lambda ctx, _label=label: _label


def _usage(command: Any, ctx: Any) -> list[str]:
    rv = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.metavar or param.name.upper()
            name = name if param.required else f"[{name}]"
            rv.append(name + ("..." if param.nargs != 1 and not name.endswith("...") else ""))
    return rv


class _Polished:
    """Parameters polished (see ``_polish_param``) the first time help or usage asks for them."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            _polish_param(p)
        return params


class SrplCommand(_Polished, TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage(self, ctx)


class SrplGroup(_Polished, TyperGroup):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage(self, ctx), self.subcommand_metavar]


def polish(app: typer.Typer) -> None:
    """Apply the classes and the re-wrapped help to every command and sub-app of ``app``."""
    app.info.cls = app.info.cls or SrplGroup
    app.info.help = reflow(app.info.help)
    for cmd in app.registered_commands:
        if cmd.cls in (None, TyperCommand):  # Typer fills in its own class by default
            cmd.cls = SrplCommand
        cmd.help = reflow(cmd.help)
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is not None:
            polish(sub)
            group.cls = group.cls or SrplGroup
            group.help = reflow(group.help)
