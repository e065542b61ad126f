"""Options shared by several commands, each with its environment variable (CLI > env > default)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from aeopt.errors import AeoptError, DataNotFoundError


def _shown(ctx: typer.Context, param: typer.CallbackParam, value: str, envvar: str) -> str:
    """How the user gave the value: `--opt VALUE`, or `ENVVAR=VALUE` when it came from the environment."""
    # Typer vendors click: the source enum is compared by name, not imported from a private module.
    from_env = getattr(ctx.get_parameter_source(param.name), "name", "") == "ENVIRONMENT"
    return f"{envvar}={value}" if from_env else f"{param.opts[0]} {value}"


def _existing_folder(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """A --data-dir that does not exist is an error, not a silent fall-back to another copy of the data;
    the message says whether the path came from the option or from AEOPT_DATA_DIR."""
    if value is None or ctx.resilient_parsing or Path(value).expanduser().is_dir():
        return value
    came_from = _shown(ctx, param, value, "AEOPT_DATA_DIR")
    # Said here as aeopt.training.data says it: importing that module would import torch (seconds).
    what = "not a folder" if Path(value).expanduser().exists() else "no such folder"
    raise DataNotFoundError(f"{came_from}: {what}; pass the folder that holds FashionMNIST/raw "
                            "(or MNIST/raw)")


DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", envvar="AEOPT_DATA_DIR", callback=_existing_folder,
                 help="Folder with FashionMNIST/raw or MNIST/raw IDX files (for example ../shared/data)."),
]
def _device_here(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """cpu, cuda or cuda:N, and a CUDA device this machine has: checked before any work starts."""
    if value in (None, "", "auto") or ctx.resilient_parsing:
        return value
    shown = _shown(ctx, param, value, "AEOPT_DEVICE")
    if not re.fullmatch(r"cpu|cuda|cuda:\d+", value):
        raise AeoptError(f"{shown}: not a device; use cpu, cuda or cuda:N")
    # Imported here: only a CUDA device needs it, and it asks torch (seconds to import).
    from aeopt.search.launch import missing_cuda  # noqa: PLC0415

    problem = missing_cuda([value])
    if problem:
        raise AeoptError(f"{shown}: {problem}")
    return value


DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", envvar="AEOPT_DEVICE", callback=_device_here,
                 help="cpu, cuda or cuda:N. Default: cuda when available, else cpu."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set",
                 help="Override a field by dotted path, e.g. --set data.train_subset=6000 (repeatable)."),
]
AmpOpt = Annotated[bool, typer.Option("--amp/--no-amp",
                                      help="bfloat16 mixed precision on CUDA (ignored on CPU).")]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", envvar="AEOPT_STORAGE", help="Study storage URL. Default: sqlite:///studies/aeopt.db.",
                 show_default=False),
]
StudyOpt = Annotated[str, typer.Option("--study", "-s", envvar="AEOPT_STUDY", help="Study name.")]


def artifact_folder(ctx: typer.Context, param: typer.CallbackParam,
                    value: str | Path | None) -> str | Path | None:
    """--artifacts (or AEOPT_ARTIFACTS) checked as --out is, before anything is created: a file of that name
    would otherwise fail every trial's upload later, each in a log line, and the artifacts be lost."""
    if value is None or ctx.resilient_parsing:
        return value
    # Imported here: aeopt.files is light, but the commands that never see --artifacts need not load it.
    from aeopt.files import output_folder  # noqa: PLC0415

    try:
        output_folder(value)
    except AeoptError as exc:
        why = str(exc).removeprefix(f"{value}: ")  # the path is named once, with where it came from
        raise AeoptError(f"{_shown(ctx, param, str(value), 'AEOPT_ARTIFACTS')}: {why}") from None
    return value


# ----- --help that reads as prose ----------------------------------------------------------------


def flowing(text: str | None) -> str | None:
    """Help text as flowing paragraphs: the lines of a paragraph hard-wrapped in the source are joined,
    so the terminal wraps them (typer's rich help keeps source line breaks, and breaks sentences mid-line).

    A paragraph whose later lines are indented (examples aligned under each other) is a layout and keeps
    its lines; so does one that starts with click's no-rewrap mark "\\b".
    """
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(_flow(p) for p in paragraphs)


def _flow(paragraph: str) -> str:
    lines = paragraph.split("\n")
    if paragraph.startswith("\b") or any(line[:1].isspace() for line in lines[1:]):
        return paragraph
    return " ".join(line.strip() for line in lines)


def tidy_help(command: Any) -> None:
    """Every command under `command` (a click command or group): prose help flows, and flags show no
    value metavar (typer's rich help prints `<bool>` beside options that take no value)."""
    command.help = flowing(command.help)
    command.short_help = flowing(command.short_help)
    for param in command.params:
        _no_metavar(param)
        if getattr(param, "help", None):
            param.help = flowing(param.help)
    if not getattr(command.get_help_option, "tidied", False):
        command.get_help_option = _help_option_without_metavar(command.get_help_option)
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


def _no_metavar(param: Any) -> Any:
    if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""  # shown as nothing; the plain formatter never shows a flag's metavar
    return param


def _help_option_without_metavar(get_help_option: Any) -> Any:
    # --help itself is a flag that click makes on first use, with names the context decides.
    def wrapped(ctx: Any) -> Any:
        return _no_metavar(get_help_option(ctx))

    wrapped.tidied = True
    return wrapped


class HelpGroup(TyperGroup):
    """The root group: tidies the help of every command before any of it is parsed or shown, so each
    command is written in its source as it reads best there (typer builds the tree on every call)."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        tidy_help(self)
        return super().make_context(info_name, args, parent=parent, **extra)
