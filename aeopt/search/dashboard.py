"""optuna-dashboard on a study storage, with the trials' artifacts and each study's spec as its note.

The dashboard has no authentication and its UI can delete studies, so it binds 127.0.0.1 unless
told otherwise, and says so loudly when told otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, BinaryIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from aeopt.config import SearchSpec, dump_yaml
from aeopt.errors import AeoptError
from aeopt.search.storage import Storage
from aeopt.search.studies import (
    ARTIFACTS_ATTR,
    ARTIFACTS_ENV,
    default_artifact_dir,
    name_objectives,
    spec_of,
    study_names,
)

log = logging.getLogger(__name__)

PUBLIC_WARNING = ("the dashboard has no authentication and anyone who can reach {host}:{port} can read and "
                  "delete studies; bind 127.0.0.1 (the default) and use an SSH tunnel instead")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ----- the study note ----------------------------------------------------------------------------


def spec_markdown(spec: SearchSpec | dict[str, Any], name: str | None = None) -> str:
    """The spec as a markdown note: a title, the description, and the spec as YAML."""
    data = spec.model_dump(mode="json") if isinstance(spec, SearchSpec) else dict(spec)
    title = name or data.get("name") or "study"
    kind = (data.get("model") or {}).get("kind", "?")
    description = (data.get("description") or "").strip()
    parts = [f"## {title}", "", f"aeopt study of a `{kind}`; the spec below is what every worker trains."]
    if description:
        parts += ["", description]
    parts += ["", "```yaml", dump_yaml(data).rstrip(), "```", ""]
    return "\n".join(parts)


def write_study_note(study: optuna.Study) -> None:
    """Show the study's stored spec as its note in optuna-dashboard. Never raises: the note is a
    convenience, and a study that was created must not be reported as failed for it."""
    try:
        # The stored spec, not the one a caller has in hand: with --skip-if-exists (or a quickstart
        # rerun) that one may differ, and the note says this is what every worker trains.
        spec = spec_of(study)
        # Imported here: optuna-dashboard costs a second at start-up, and `aeopt study` commands need
        # it only for this call. Inside the try: an install without it (a GPU image given only the
        # packages that train) still creates studies, without the note.
        from optuna_dashboard import save_note  # noqa: PLC0415

        save_note(study, spec_markdown(spec, study.study_name))
    except Exception as exc:
        log.warning("could not write study %s's dashboard note: %s: %s", study.study_name, type(exc).__name__,
                    exc)


# ----- the artifact store ------------------------------------------------------------------------


class FolderArtifactStore:
    """Optuna's ArtifactStore over several folders: studies of one storage may keep their
    artifacts in different folders, and the dashboard takes one store. Reads try each folder
    (artifact ids are UUIDs, so they cannot collide); writes go to the first."""

    def __init__(self, folders: list[Path]):
        if not folders:
            raise ValueError("at least one folder")
        self.folders = list(dict.fromkeys(Path(f) for f in folders))
        self._stores = [FileSystemArtifactStore(f) for f in self.folders]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for store in self._stores:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} is in none of {', '.join(map(str, self.folders))}")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.folders[0].mkdir(parents=True, exist_ok=True)
        self._stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for store in self._stores:
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} not found")


def artifact_folders(storage: Storage, artifacts: str | Path | None = None) -> list[Path]:
    """--artifacts, else AEOPT_ARTIFACTS, else every study's own folder plus the storage's default."""
    if artifacts:
        return [Path(artifacts).expanduser()]
    if os.environ.get(ARTIFACTS_ENV):
        return [Path(os.environ[ARTIFACTS_ENV]).expanduser()]
    folders = [default_artifact_dir(storage)]
    for summary in optuna.get_all_study_summaries(storage.optuna, include_best_trial=False):
        attr = summary.user_attrs.get(ARTIFACTS_ATTR)
        if attr:
            folders.insert(0, Path(str(attr)).expanduser())
    return list(dict.fromkeys(folders))


# ----- the server --------------------------------------------------------------------------------


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # One log line per HTTP request would drown everything else; keep them at debug level.
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard %s - %s", self.address_string(), format % args)


def make_app(storage: Storage, artifacts: str | Path | None = None) -> tuple[Any, list[Path]]:
    """The dashboard's WSGI app on the storage, with the artifact store; also returns the folders."""
    # Imported here, like save_note above: only `aeopt dashboard` serves.
    from optuna_dashboard import wsgi  # noqa: PLC0415

    folders = artifact_folders(storage, artifacts)
    return wsgi(storage.optuna, artifact_store=FolderArtifactStore(folders)), folders


def prepare_studies(storage: Storage) -> list[str]:
    """The storage's study names, after naming the objective of aeopt studies made before studies were
    created with one (the dashboard would say "Objective 0"). Warns when there are no studies: an empty
    dashboard is most often the wrong --storage."""
    names = study_names(storage)
    if not names:
        log.warning("warning: %s holds no studies yet; create one with `aeopt study create SPEC.yaml` "
                    "or pass the --storage your workers use", storage.display)
        return names
    try:
        for name in name_objectives(storage):
            log.info("named study %s's objective for the dashboard", name)
    except Exception as exc:  # a read-only database still serves; the axis just says "Objective 0"
        log.warning("could not name the studies' objectives: %s: %s", type(exc).__name__, exc)
    return names


def serve(storage: Storage, host: str = "127.0.0.1", port: int = 8080,
          artifacts: str | Path | None = None) -> None:
    """Serve optuna-dashboard until interrupted."""
    if not is_loopback(host):
        log.warning("warning: %s", PUBLIC_WARNING.format(host=host, port=port))
    prepare_studies(storage)
    app, folders = make_app(storage, artifacts)
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    try:
        server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except socket.gaierror as exc:
        raise AeoptError(f"--host {host}: {exc.strerror or exc}; pass an address such as 127.0.0.1") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise AeoptError(f"cannot listen on {host}:{port}: {reason}; pick another --port") from None
    shown = f"[{host}]" if ":" in host else host
    log.info("optuna-dashboard for %s on http://%s:%d/ (artifacts: %s); Ctrl-C stops it",
             storage.display, shown, server.server_port, ", ".join(map(str, folders)))
    try:
        # Ctrl-C and SIGTERM reach the CLI as KeyboardInterrupt: "stopped by signal ...", exit 130 or
        # 143, as every aeopt command (a supervisor reads a plain 0 as "it finished by itself").
        server.serve_forever()
    finally:
        server.server_close()
