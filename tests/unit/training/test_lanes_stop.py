"""A stop signal in the main thread, while folds train side by side in lanes, stops the lanes within a
training step, not at their epoch's end (aeopt.search.stopping promises a long epoch stops at once)."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import torch

from aeopt import threads
from aeopt.config import RunConfig
from aeopt.training.cv import cross_validate
from aeopt.training.data import Split
from aeopt.training.lanes import Lanes


class _Stop(KeyboardInterrupt):
    pass


@pytest.fixture
def stop_in_main_thread():
    """`fire(after)`: a real signal to the main thread `after` seconds from now, raising _Stop there
    (as the worker's handler raises StopSignal); returns when it was sent."""
    sent: list[float] = []

    def handler(signum, frame):  # noqa: ARG001
        raise _Stop

    old = signal.signal(signal.SIGUSR1, handler)
    main = threading.main_thread().ident

    def fire(after: float) -> None:
        def send() -> None:
            time.sleep(after)
            sent.append(time.monotonic())
            signal.pthread_kill(main, signal.SIGUSR1)

        threading.Thread(target=send, daemon=True).start()

    fire.sent = sent
    yield fire
    signal.signal(signal.SIGUSR1, old)


def test_a_stop_in_the_main_thread_ends_the_lanes_work_at_their_next_step(stop_in_main_thread):
    steps = []

    def long_epoch(k: int) -> None:
        for _ in range(1000):  # 10 s unless stopped
            threads.tick()  # as every training loop does once per step
            time.sleep(0.01)
            steps.append(k)

    with pytest.raises(_Stop), Lanes(2) as lanes:
        stop_in_main_thread(0.5)
        lanes.map(long_epoch, range(2))
    stopped = time.monotonic() - stop_in_main_thread.sent[0]  # the lanes closed
    done = len(steps)
    assert stopped < 1.0
    time.sleep(0.1)
    assert len(steps) == done  # no lane still running once map has raised


def test_folds_in_lanes_stop_within_a_batch(stop_in_main_thread):
    g = torch.Generator().manual_seed(1)
    # Enough images for an epoch of seconds on a fast CPU too (1,500 took 2.0 s on a Zen 5 core in CI).
    pool = Split((torch.rand(3000, 1, 28, 28, generator=g) * 255).to(torch.uint8), torch.arange(3000) % 10)
    cfg = RunConfig.model_validate({"model": {"kind": "conv_ae", "c1": 8, "c2": 16, "c3": 16, "fc": 32},
                                    "budget": {"batch_size": 1, "max_epochs": 50}})
    epochs: list[float] = []

    def on_epoch(epoch, *args, **kwargs):  # noqa: ARG001
        epochs.append(time.monotonic())
        if len(epochs) == 1:
            stop_in_main_thread(0.2)  # early in the second epoch

    started = time.monotonic()
    with pytest.raises(_Stop):
        cross_validate(cfg, pool, 2, 0, torch.device("cpu"), fused=False, concurrent=True, on_epoch=on_epoch)
    stopped = time.monotonic() - stop_in_main_thread.sent[0]
    epoch = epochs[0] - started
    assert epoch > 1.5, f"an epoch of {epoch:.1f} s is too short to tell"
    # The signal came 0.2 s into the second epoch: waiting for its end would take over a second more.
    assert stopped < 0.5, f"stopped {stopped:.1f} s after the signal; an epoch takes {epoch:.1f} s"
