"""Options shared by several commands, each with its environment variable (CLI > env > default)."""

from __future__ import annotations

from typing import Annotated

import typer

DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", envvar="AEOPT_DATA_DIR",
                 help="Folder with FashionMNIST/raw or MNIST/raw IDX files (for example ../shared/data)."),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", envvar="AEOPT_DEVICE",
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
