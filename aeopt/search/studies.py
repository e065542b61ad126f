"""Studies in a storage: create (the spec goes inside), load, list, summarize, delete.

The storage is the single source of truth: `create_study` validates the spec and stores it in
the study's user attrs, so a worker on any machine needs only the storage and the study's name.
Every function takes the `Storage` the CLI opened once; messages name it by `storage.display`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError

from aeopt import __version__
from aeopt.config import SearchSpec, format_validation_error, spec_schema
from aeopt.errors import ConfigError, StudyError
from aeopt.search.records import StudyCounts, TrialRecord, best_trial, value_text
from aeopt.search.samplers import build_sampler
from aeopt.search.storage import Storage, normalize, resolve_url

SPEC_ATTR = "aeopt:spec"
ARTIFACTS_ATTR = "aeopt:artifacts"
ARTIFACTS_ENV = "AEOPT_ARTIFACTS"
VERSION_ATTR = "aeopt:version"

log = logging.getLogger(__name__)


# Study names become folder names (`aeopt launch` writes logs/<study>/worker-N.log), so a new study's
# name is one path component: no '/', no '..', nothing a shell would need quoted.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 200 characters"


def check_study_name(name: str) -> str:
    if not _NAME.match(name):
        raise StudyError(f"study name {name!r}: use {NAME_RULE}")
    return name


def path_safe(name: str) -> str:
    """A study name as one folder name, for studies created before names were checked (or by Optuna):
    every character outside [A-Za-z0-9._-] becomes '_', and leading dots go ('..' cannot escape)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return safe[:200] or "study"


# What a study's value measures, named in optuna-dashboard and on the report's axes instead of
# "Objective 0": the validation loss of the kind (aeopt.training.kinds), or a classifier's error.
METRIC_NAMES = {"vae": "CV loss (neg. ELBO / image)", "aae": "CV loss (MSE) + prior penalty"}
DEFAULT_METRIC = "CV loss (MSE)"
CLASSIFIER_METRIC = "CV error"


def kind_metric(kind: str | None) -> str:
    """What an autoencoder study of this model kind minimizes."""
    return METRIC_NAMES.get(kind or "", DEFAULT_METRIC)


def metric_name(spec: SearchSpec) -> str:
    return CLASSIFIER_METRIC if spec.task == "classifier" else kind_metric(spec.model.kind)


def objective_name(study: optuna.Study) -> str:
    """The study's metric name as set at create, else from its stored spec, else Optuna's default."""
    if study.metric_names:
        return study.metric_names[0]
    raw = study.user_attrs.get(SPEC_ATTR)
    if not raw:
        return "Objective value"
    if raw.get("task") == "classifier":
        return CLASSIFIER_METRIC
    return kind_metric((raw.get("model") or {}).get("kind"))


def name_objectives(storage: Storage) -> list[str]:
    """Give every aeopt study created before metric names were set its name; returns the studies named."""
    named = []
    for summary in optuna.get_all_study_summaries(storage.optuna, include_best_trial=False):
        if SPEC_ATTR not in summary.user_attrs:
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage.optuna)
        if study.metric_names:
            continue
        study.set_metric_names([objective_name(study)])
        named.append(summary.study_name)
    return named


def _quiet_optuna() -> None:
    # Optuna logs every trial at INFO; aeopt prints its own one-line summaries instead.
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_names(storage: Storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage.optuna, include_best_trial=False)]


def create_study(storage: Storage, spec: SearchSpec, name: str | None = None, *, skip_if_exists: bool = False,
                 artifacts: str | None = None) -> optuna.Study:
    """Create the study with `spec` inside (or, with `skip_if_exists`, load the one of that name)."""
    _quiet_optuna()
    name = name or spec.name
    if not name:
        raise StudyError("the study needs a name: pass --study-name NAME or set `name:` in the spec")
    if name in study_names(storage):
        return _existing_study(storage, name, spec, skip_if_exists)
    check_study_name(name)  # only new studies: one created before names were checked still loads
    build_sampler(spec)  # a sampler this machine cannot run fails here, not in every worker
    spec = spec.model_copy(update={"name": name})
    try:
        study = optuna.create_study(study_name=name, storage=storage.optuna, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        # Another `study create` (a launcher starting several, a container's replicas) made it since
        # the check above: the same outcome as had it been there before.
        return _existing_study(storage, name, spec, skip_if_exists)
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))  # first: what joiners wait for
    study.set_metric_names([metric_name(spec)])
    study.set_user_attr(VERSION_ATTR, __version__)
    if artifacts:
        # Absolute: workers and the dashboard read it from their own working folders, which are not
        # this command's ("artifacts" would be a different folder, or none, for each of them).
        study.set_user_attr(ARTIFACTS_ATTR, str(Path(artifacts).expanduser().resolve()))
    points, skipped = spec.enqueued_points()
    for params in points:  # the spec's starting points: the first trials any worker asks for
        study.enqueue_trial(params)
    for line in skipped:
        log.warning("study '%s': %s", name, line)
    return study


SPEC_WAIT_SECONDS = 10.0  # how long a joiner waits for a study's creator to store its spec


def _existing_study(storage: Storage, name: str, spec: SearchSpec, skip_if_exists: bool) -> optuna.Study:
    """The study `name` that is already there: with `skip_if_exists` loaded, its spec compared, else
    the one-line error."""
    if not skip_if_exists:
        raise StudyError(f"study '{name}' already exists in {storage.display}; "
                         "pass --skip-if-exists to reuse it, or `aeopt study delete` it first")
    _wait_for_spec(storage, name)
    study, stored = load_study(storage, name)
    changes = spec_changes(stored, spec)
    if changes:  # workers train the stored spec: say so, or the user believes the new one runs
        log.warning("study '%s' already exists with another spec (%s): it keeps its stored spec, which "
                    "is what every worker trains; for the new one use a new --study-name, or "
                    "`aeopt study delete %s%s` first", name, changes_text(changes), name,
                    storage_flag(storage))
    return study


def _wait_for_spec(storage: Storage, name: str) -> None:
    """Give a study that another `study create` has just made the moment it needs to store its spec:
    between Optuna's create and the spec's write the study is bare, and loading it then would say
    "not created by aeopt". Only a bare study is waited for (no attrs, no trials): one Optuna made
    with anything in it is not aeopt's, and `load_study` says so at once."""
    deadline = time.monotonic() + SPEC_WAIT_SECONDS
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage.optuna)
        except KeyError:  # deleted meanwhile: load_study names what is there
            return
        if study.user_attrs or study.get_trials(deepcopy=False) or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def storage_flag(storage: Storage) -> str:
    """' --storage <the URL>' in a command to run next, to paste as it is, or '' when `storage` is the one
    commands open anyway. A URL holding a password (shown redacted) stays ' --storage URL': printed
    output ends up in logs and terminals' scrollback, where a credential must never go."""
    if storage.url == normalize(resolve_url(None)):
        return ""
    return f" --storage {shlex.quote(storage.url)}" if storage.display == storage.url else " --storage URL"


def spec_changes(stored: SearchSpec, given: SearchSpec) -> list[tuple[str, Any, Any]]:
    """Where `given` differs from a study's `stored` spec: (dotted field, stored value, given value), in
    the spec's order. The name is not compared: the stored spec carries the study's (see create_study)."""
    old, new = _leaves(stored.model_dump(mode="json")), _leaves(given.model_dump(mode="json"))
    return [(key, old.get(key), new.get(key)) for key in dict.fromkeys([*old, *new])
            if key != "name" and old.get(key) != new.get(key)]


def changes_text(changes: list[tuple[str, Any, Any]], limit: int = 3) -> str:
    """'budget.max_epochs: 1 stored, 7 given; ...', the first `limit` of `spec_changes`."""
    shown = [f"{key}: {_shown(old)} stored, {_shown(new)} given" for key, old, new in changes[:limit]]
    more = len(changes) - limit
    return "; ".join(shown) + (f"; {more} more" if more > 0 else "")


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)


# ----- where a study keeps its trial artifacts (see aeopt.search.artifacts) ------------------------


def artifact_dir(study: optuna.Study) -> Path | None:
    """The study's artifact folder: AEOPT_ARTIFACTS, else the study's "aeopt:artifacts" attr, else None."""
    env = os.environ.get(ARTIFACTS_ENV)
    if env:
        return Path(env).expanduser()
    attr = study.user_attrs.get(ARTIFACTS_ATTR)
    if attr:
        return Path(str(attr)).expanduser()
    return None


def default_artifact_dir(storage: Storage | None) -> Path:
    """Beside the database for SQLite (sqlite:///path/x.db -> path/artifacts), else ./artifacts.

    A server database (PostgreSQL, MySQL) says nothing about a disk the workers share, so the
    default there is the working directory; pass --artifacts to point at a shared folder.
    """
    url = storage.url if storage is not None else ""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            return Path(path).expanduser().parent / "artifacts"
    return Path("artifacts")


def spec_of(study: optuna.Study) -> SearchSpec:
    """The spec stored in the study (an autoencoder or a classifier spec, by its `task`)."""
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise StudyError(f"study '{study.study_name}' was not created by aeopt (no spec inside); "
                         "create it with `aeopt study create SPEC.yaml`")
    source = f"spec of study '{study.study_name}'"
    try:
        return spec_schema(raw).model_validate(raw)
    except ValidationError as exc:
        msg = format_validation_error(exc, source)
    except ConfigError as exc:
        msg = f"{source}: {exc}"
    raise StudyError(msg.splitlines()[0] + " (created by another aeopt version?)")


def load_study(storage: Storage, name: str) -> tuple[optuna.Study, SearchSpec]:
    """The study and its spec; a StudyError naming the studies there when it does not exist."""
    study = open_study(storage, name)
    return study, spec_of(study)


def open_study(storage: Storage, name: str) -> optuna.Study:
    """The study without its spec checked (what delete needs: a study of another aeopt version, or one
    Optuna made, is deleted all the same); a StudyError naming the studies there when it does not exist."""
    _quiet_optuna()
    try:
        return optuna.load_study(study_name=name, storage=storage.optuna)
    except KeyError:
        names = study_names(storage)
        hint = (f" (studies here: {', '.join(names[:10])})" if names
                else " (there are none: run `aeopt study create SPEC.yaml`)")
        raise StudyError(f"no study named '{name}' in {storage.display}{hint}") from None


@dataclass
class StudySummary:
    name: str
    model: str
    counts: StudyCounts
    best_value: float | None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_trial: int | None = None
    best_cv_std: float | None = None
    best_text: str = "-"  # '0.01234 (trial 7)' or '-'

    @property
    def n_trials(self) -> int:
        return self.counts.total

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "counts": self.counts.as_dict(),
                "best_value": self.best_value, "best_params": self.best_params, "best_trial": self.best_trial,
                "best_cv_std": self.best_cv_std, "n_trials": self.n_trials}


def summarize(study: optuna.Study) -> StudySummary:
    # Read from the stored spec without validating it: a list must not fail on one odd study.
    model = study.user_attrs.get(SPEC_ATTR, {}).get("model", {}).get("kind", "?")
    summary = StudySummary(study.study_name, model, StudyCounts.of(study), None)
    best = best_trial(study)
    if best is not None:
        summary.best_value, summary.best_trial = best.value, best.number
        summary.best_params = dict(best.params)
        summary.best_cv_std = TrialRecord.of(best).cv_std
    summary.best_text = value_text(best)
    return summary


def list_studies(storage: Storage) -> list[StudySummary]:
    _quiet_optuna()
    return [summarize(optuna.load_study(study_name=name, storage=storage.optuna))
            for name in study_names(storage)]


def delete_study(storage: Storage, name: str) -> None:
    open_study(storage, name)  # a clear error when it does not exist; its spec need not validate
    optuna.delete_study(study_name=name, storage=storage.optuna)
