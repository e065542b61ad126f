"""The `aeopt` command line: one typer sub-app or command per noun; each calls one library function."""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import sys
import warnings

import matplotlib
import optuna
import typer

from aeopt import allocator
from aeopt.cli.common import HelpGroup
from aeopt.errors import AeoptError, StorageError
from aeopt.switches import turned_on
from aeopt.threads import apply_process_defaults

app = typer.Typer(
    name="aeopt",
    cls=HelpGroup,  # --help as flowing prose, and no `<bool>` beside flags: see tidy_help
    # The example names a shipped config, not its path in the checkout: it runs from any folder.
    help="Tune the homework's autoencoders (conv, denoising, VAE) on Fashion-MNIST with Optuna.\n\n"
    "Start with `aeopt quickstart`, or `aeopt train conv_ae --data-dir DIR`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug",
                               help="Show full tracebacks on errors (or set AEOPT_DEBUG=1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
) -> None:
    if debug:
        os.environ["AEOPT_DEBUG"] = "1"
    logging.getLogger("aeopt").setLevel(logging.WARNING if quiet else logging.INFO)


# Command -> the aeopt.cli module that registers it. Registration is lazy, and only the invoked
# command's module is imported: each pulls in torch, optuna-dashboard or plotly (seconds of
# start-up between them), which `aeopt study list` should not pay for `aeopt report`'s sake.
# `aeopt --help` (or an unknown command) imports them all, to list every command.
COMMANDS = {
    "train": "train", "study": "study", "worker": "worker", "launch": "launch", "storage": "storage",
    "quickstart": "quickstart", "export": "export", "finetune": "finetune", "baseline": "baseline",
    "compare": "baseline", "dashboard": "dashboard", "report": "report", "refit": "refit",
    "configs": "configs",
}


def command_of(argv: list[str]) -> str | None:
    """The command named in argv: the first word that is not an option (root options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


_registered: set[str] = set()  # main() may run more than once in a process (tests): register once


def _register(argv: list[str]) -> None:
    name = command_of(argv)
    modules = [COMMANDS[name]] if name in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in modules:
        if module not in _registered:
            importlib.import_module(f"aeopt.cli.{module}").register(app)
            _registered.add(module)


class _NoInterruptTracebacks(logging.Filter):
    """Drops Optuna's report of a trial ended by a stop request (Ctrl-C, SIGTERM): its traceback shows
    where the signal happened to land, which is not an error; the trial itself is still marked FAIL."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        trial = re.match(r"Trial (\d+) failed with ", message)
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt) and trial:
            self.interrupted.add(trial.group(1))
            return False
        # The second line Optuna writes for the same trial ("Trial 3 failed with value None.").
        return not (trial and trial.group(1) in self.interrupted)


def _process_setup() -> None:
    """Process-wide settings that belong to the program, not the library: set once, here."""
    # CPU threads: one per core idle now, chosen before any command imports torch (aeopt/threads.py).
    apply_process_defaults()
    # Host memory that training steps reuse rather than fault in anew each step (aeopt/allocator.py).
    allocator.tune()
    # Headless: workers, servers and CI have no display; Optuna's matplotlib plots use pyplot.
    matplotlib.use("Agg")
    # Heartbeats and their retry callback are "experimental" in Optuna; they are the mechanism
    # aeopt relies on, so the per-call warning says nothing a user can act on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optimize_log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _NoInterruptTracebacks) for f in optimize_log.filters):
        optimize_log.addFilter(_NoInterruptTracebacks())


def _raise_interrupt(signum: int, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def _signal_of(exc: BaseException | None) -> int | None:
    """The signal that ended the command: a KeyboardInterrupt in the exception chain, raised by
    Python on Ctrl-C (no message) or by a SIGTERM handler as "signal N" (this module's, the worker's).
    Typer turns it into exit code 130 whatever the signal was."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            if isinstance(getattr(exc, "signum", None), int):  # the worker's StopSignal
                return exc.signum
            number = re.fullmatch(r"signal (\d+)", str(exc))
            return int(number.group(1)) if number else int(signal.SIGINT)
        exc = exc.__cause__ or exc.__context__
    return None


def _stopped(signum: int) -> int:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = str(signum)
    typer.echo(f"stopped by signal {name}", err=True)
    return 128 + signum  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM


class StderrHandler(logging.StreamHandler):
    """Log lines to whatever `sys.stderr` is when a line comes, not the stream there when the first
    command ran in this process: a later `main()` under another capture or redirect (tests, notebooks)
    would otherwise write to a stream that may be closed by then."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _process_setup()
    # AEOPT_DEBUG=0 (or false, no, off) is off, as every aeopt switch reads it (aeopt/switches.py).
    debug = "--debug" in argv or turned_on("AEOPT_DEBUG")
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("aeopt")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        # SIGTERM (a scheduler, `docker stop`, `aeopt launch` stopping its workers) stops a command as
        # Ctrl-C does: cleanly, with exit code 143. Not possible outside the main thread (tests).
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:
        previous = None
    try:
        return _run(argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str], debug: bool) -> int:
    try:
        # Inside the try: a Ctrl-C during the seconds of imports is a clean stop too.
        _register(argv)
        # Standalone mode: typer reports usage errors itself (exit 2) and raises SystemExit.
        app(args=argv, prog_name="aeopt")
    except SystemExit as exc:
        signum = _signal_of(exc)
        if signum is not None:
            return _stopped(signum)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt as exc:
        return _stopped(_signal_of(exc) or signal.SIGINT)
    except AeoptError as exc:
        if debug:
            raise
        return _error_lines(exc)
    except Exception as exc:
        outage = _storage_error_in(exc)
        if outage is None or debug:
            raise
        return _error_lines(outage)
    return 0


def _error_lines(exc: AeoptError) -> int:
    for line in str(exc).splitlines() or ["error"]:
        typer.echo(f"error: {line}", err=True)
    return exc.exit_code


def _storage_error_in(exc: BaseException) -> StorageError | None:
    """The storage error an error was raised from or while handling: a storage gone for longer than the
    outage window fails the cleanup code that runs after it too (Optuna's trial cleanup then raises an
    UnboundLocalError of its own while handling it), and what follows from it says nothing more."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc.__cause__, exc.__context__]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, StorageError):
            return e
        seen.add(id(e))
        todo.extend([e.__cause__, e.__context__])
    return None


def entrypoint() -> None:
    sys.exit(main())
