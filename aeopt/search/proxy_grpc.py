"""The gRPC server of `aeopt storage proxy`: Optuna's servicer, with each trial's answer encoded once per
version of the trial. Needs grpcio (`pip install 'aeopt[grpc]'`); aeopt.search.proxy imports it lazily.

Every `GetTrials` answer holds all the study's running trials (Optuna's client asks for them again
each time): at 256 workers, 256 trials to encode from Python objects for every ask and every report.
`ProxyStorage` keeps a trial's object while the trial is unchanged, so the message encoded from it
is kept with it and only copied into each answer (in C, an order of magnitude cheaper than encoding;
a quick unlocked check on this 2-core machine: about 35 ms to encode 256 trials, 1.6 ms to copy).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
from optuna.storages import BaseStorage

# Optuna's server pieces (`run_grpc_proxy_server` is its make_server, start and wait) live in private
# modules.
from optuna.storages._grpc.auto_generated import api_pb2, api_pb2_grpc
from optuna.storages._grpc.servicer import OptunaStorageProxyService, _to_proto_trial
from optuna.trial import FrozenTrial

from aeopt.errors import AeoptError


class Servicer(OptunaStorageProxyService):
    """Optuna's servicer; `GetTrials` reuses a trial's encoded message while the trial object is the same."""

    def __init__(self, storage: BaseStorage) -> None:
        super().__init__(storage)
        self._encoded: dict[int, tuple[FrozenTrial, api_pb2.Trial]] = {}  # trial id -> (object, message)
        self.encoded = 0  # trials encoded (for tests)

    def GetTrials(self, request: api_pb2.GetTrialsRequest,
                  context: grpc.ServicerContext) -> api_pb2.GetTrialsReply:
        included, newer_than = set(request.included_trial_ids), request.trial_id_greater_than
        try:
            trials = self._backend.get_all_trials(request.study_id, deepcopy=False)
        except KeyError as e:
            context.abort(code=grpc.StatusCode.NOT_FOUND, details=str(e))
        return api_pb2.GetTrialsReply(trials=[self._encode(t) for t in trials
                                              if t._trial_id > newer_than or t._trial_id in included])

    def _encode(self, trial: FrozenTrial) -> api_pb2.Trial:
        kept = self._encoded.get(trial._trial_id)
        if kept is not None and kept[0] is trial:
            return kept[1]
        message = _to_proto_trial(trial)
        self._encoded[trial._trial_id] = (trial, message)  # a race only encodes a trial twice
        self.encoded += 1
        return message


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: grpc's C core writes its own multi-line report of a
    failed bind there, and the error below says the same in one line. Used only at start-up, before any
    other thread writes."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def bind(host: str, port: int, threads: int) -> grpc.Server:
    """A gRPC server (no service yet, not started) listening on host:port; `server.port` is the port it got
    (port 0 asks for a free one). A port in use, or a host that is not an address of this machine, is
    one line (AeoptError), not grpc's RuntimeError traceback."""
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    try:
        # grpc returns 0 for an address it could not bind in some versions and raises in others.
        with _quiet_stderr():
            bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        server.stop(None)
        raise AeoptError(f"cannot listen on {host}:{port} (in use, or not an address of this machine); "
                         "pick another --port or --host")
    server.port = bound
    return server


def serve_on(server: grpc.Server, storage: BaseStorage) -> grpc.Server:
    """`server` (from `bind`) with `storage`'s service added; still to start."""
    servicer = Servicer(storage)
    api_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)
    server.servicer = servicer  # for tests
    return server


def make_server(storage: BaseStorage, host: str, port: int, threads: int) -> grpc.Server:
    """A gRPC server (not started) for `storage` on host:port with `threads` handler threads."""
    return serve_on(bind(host, port, threads), storage)
