"""docker/compose.yaml stays consistent with the CLI: every aeopt command in it parses, the dashboard is
published on the host's loopback only, and no password sits in the file except through a variable.

Docker cannot run on the development machines, so this is the compose file's only check here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aeopt.cli import main

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# ${VAR}, ${VAR:?message} or ${VAR:-default}: compose's interpolation
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
# a password in a URL's userinfo: scheme://user:PASSWORD@host
_URL_PASSWORD = re.compile(r"://[^/@\s:]+:([^@\s]+)@")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _interpolate(text: str) -> str:
    """What compose would pass with no variable set: the default, else a placeholder."""
    return _VAR.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else f"<{m.group(1)}>", text)


def _aeopt_services() -> dict[str, list[str]]:
    """Service name -> its aeopt argv, for every service built from docker/Dockerfile (entry point aeopt)."""
    out = {}
    for name, service in _compose()["services"].items():
        if "build" not in service:
            continue
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert isinstance(service["command"], list), f"{name}: command must be a list (no shell)"
        out[name] = [_interpolate(str(arg)) for arg in service["command"]]
    return out


def _parses(argv: list[str]) -> int:
    return main([*argv, "--help"])


def test_the_image_entry_point_is_aeopt():
    assert re.search(r'^ENTRYPOINT \["aeopt"\]$', DOCKERFILE.read_text(), re.MULTILINE)


def test_the_compose_file_runs_study_create_workers_and_the_dashboard():
    commands = _aeopt_services()
    firsts = {argv[0] if argv[0] != "study" else " ".join(argv[:2]) for argv in commands.values()}
    assert {"study create", "worker", "dashboard"} <= firsts


@pytest.mark.parametrize("service", sorted(_aeopt_services()))
def test_every_aeopt_command_in_compose_parses(service, capsys):
    argv = _aeopt_services()[service]
    assert _parses(argv) == 0, f"{service}: aeopt {' '.join(argv)} --help\n{capsys.readouterr().err}"


def test_a_bad_command_would_be_caught(capsys):
    # The check above can fail: an option the CLI does not have is a usage error even with --help.
    assert _parses(["worker", "--study", "x", "--no-such-option"]) != 0
    assert _parses(["no-such-command"]) != 0
    capsys.readouterr()


def test_the_dashboard_is_published_on_loopback_only():
    services = _compose()["services"]
    assert services["dashboard"]["ports"], "the dashboard must be reachable from the host"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _passwords(node, path=""):
    """(where, value) of every value that is or holds a password."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and re.search(r"PASSWORD|PASSWD|SECRET", str(key), re.IGNORECASE):
                yield where, value
            yield from _passwords(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _passwords(value, f"{path}[{i}]")
    elif isinstance(node, str):
        for match in _URL_PASSWORD.finditer(node):
            yield path, match.group(1)


def test_no_password_literal_only_variables_without_defaults():
    found = list(_passwords(_compose()))
    assert found, "the compose file sets a database password somewhere"
    for where, value in found:
        whole = _VAR.fullmatch(value)
        assert whole, f"{where}: {value!r} is a literal; use ${{AEOPT_DB_PASSWORD:?...}}"
        assert whole.group(2) not in (":-", "-"), f"{where}: a default password {value!r} would be used"


def test_the_password_check_can_fail():
    bad = {"s": {"environment": {"POSTGRES_PASSWORD": "${P:-change-me}",
                                 "AEOPT_STORAGE": "postgresql://u:hunter2@db/x"}}}
    values = dict(_passwords(bad))
    assert values["s.environment.POSTGRES_PASSWORD"] == "${P:-change-me}"
    assert _VAR.fullmatch(values["s.environment.POSTGRES_PASSWORD"]).group(2) == ":-"
    assert values["s.environment.AEOPT_STORAGE"] == "hunter2"
