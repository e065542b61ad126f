"""Options shared by several commands, each with its environment variable (CLI > env > default)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

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
