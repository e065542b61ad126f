"""Study specs: a run schema's fields (the base values) plus the search (cv, sampler, pruner, space).

A study spec uses the run config's section names, so `--set data.train_subset=6000` works on
both and an exported best trial is a run config.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from aeopt.config.base import Seed, Strict
from aeopt.config.keys import did_you_mean, section_keys
from aeopt.config.loading import apply_overrides, parse_override, read_yaml, set_path, validate
from aeopt.config.presets import RUN_CONFIG, STUDY_SPEC, is_bare_name, preset_names, resolve
from aeopt.config.run import RunConfig
from aeopt.config.supervised import FinetuneRun
from aeopt.errors import ConfigError


class IntParam(Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log scale needs low >= 1 and step 1")
        return self

    def values(self) -> list[Any]:
        return list(range(self.low, self.high + 1, self.step))


class FloatParam(Strict):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log scale needs low > 0 and no step")
        return self

    def values(self) -> list[Any]:
        if self.step is None:
            raise ValueError("a float range has no finite grid; give it a step or use categorical")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [self.low + i * self.step for i in range(n + 1)]


class CategoricalParam(Strict):
    type: Literal["categorical"]
    choices: list[Any]

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if not self.choices:
            raise ValueError("choices must not be empty")
        return self

    def values(self) -> list[Any]:
        return list(self.choices)


PARAM_TYPES = ("int", "float", "categorical")


def _require_type(value: Any) -> Any:
    if isinstance(value, dict) and "type" not in value:
        raise ValueError(f"type is required: one of {', '.join(PARAM_TYPES)}")
    return value


ParamSpec = Annotated[Union[IntParam, FloatParam, CategoricalParam], Field(discriminator="type"),
                      BeforeValidator(_require_type)]


def _fixed_value(value: Any) -> Any:
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError("neither a fixed value (a number, string, boolean or null) nor a searched one "
                         f"(a mapping with type: {', '.join(PARAM_TYPES)})")
    return value


def _entry_kind(value: Any) -> str:
    return "searched" if isinstance(value, (dict, BaseModel)) else "fixed"


# A space entry is a searched parameter (a mapping, told apart by its `type`) or a fixed value.
# The choice is made up front, by shape: a plain union would try every member on a bad mapping and
# report the last one's complaint ("space.optim.lr.bool: Input should be a valid boolean") instead
# of the real problem ("low (0.1) must be <= high (0.01)").
SpaceEntry = Annotated[
    Union[Annotated[ParamSpec, Tag("searched")], Annotated[Any, AfterValidator(_fixed_value), Tag("fixed")]],
    Discriminator(_entry_kind),
]


def _probes(param: Any) -> list[Any]:
    """The values of a space entry a run must accept: every choice, a range's ends, a fixed value."""
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, IntParam):  # the last point on the step grid, without listing the grid
        return [param.low, param.low + (param.high - param.low) // param.step * param.step]
    if isinstance(param, FloatParam):
        # Both ends of 8..32 are whole numbers, which an int field takes; the draws between them are
        # not (20.14), and would fail every trial. So probe a value a draw can take that is not whole:
        # the first step of a grid, or an interior x.5 (the ends already cover a low that is not whole).
        probes = [param.low, param.high]
        if param.step is not None and param.low + param.step <= param.high:
            probes.append(param.low + param.step)
        elif param.step is None and param.low < math.floor(param.low) + 0.5 < param.high:
            probes.append(math.floor(param.low) + 0.5)
        return probes
    return [param]


# A number PyYAML (YAML 1.1) leaves as a string: 2e-3 and 1e3 need a dot there (2.0e-3) to be floats.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _enqueue_value(param: IntParam | FloatParam | CategoricalParam, value: Any) -> Any:
    """An `enqueue:` value as the parameter takes it: `optim.lr: 2e-3` is the string '2e-3' to PyYAML.

    A base value is read through the run schema, which turns '2e-3' into 0.002; an enqueued one goes to
    Optuna as written, so a number left as a string is read here (else the point is "outside the space")."""
    if _contains(param, value) or not (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        return value
    number = float(value)
    if isinstance(param, IntParam):
        return int(number) if number.is_integer() else number
    if isinstance(param, CategoricalParam):
        numbers = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
        return next((c for c in numbers if c == number), value)
    return number


def _contains(param: IntParam | FloatParam | CategoricalParam, value: Any) -> bool:
    """Whether a searched parameter can take `value` (Optuna would take any value, with a warning)."""
    if isinstance(param, CategoricalParam):
        return any(value == c and type(value) is type(c) for c in param.choices)  # True is not 1
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if not param.low <= value <= param.high:
        return False
    if isinstance(param, IntParam):
        return isinstance(value, int) and (value - param.low) % param.step == 0
    steps = (value - param.low) / param.step if param.step else 0.0
    return abs(steps - round(steps)) < 1e-9


# A grid is listed point by point (Optuna's GridSampler): a bigger one is a typo, not a study.
MAX_GRID_POINTS = 1_000_000


def _check_grid(space: dict[str, Any]) -> None:
    for path, param in space.items():
        if isinstance(param, FloatParam) and param.step is None:
            raise ValueError(f"space.{path}: the grid sampler needs a finite space: give it a "
                             "step or make it categorical")
    points = 1
    for path, param in space.items():
        if isinstance(param, (IntParam, FloatParam)):
            points *= int((param.high - param.low) / (param.step or 1) + 1e-9) + 1
        elif isinstance(param, CategoricalParam):
            points *= len(param.choices)
        if points > MAX_GRID_POINTS:
            raise ValueError(f"space.{path}: the grid passes {MAX_GRID_POINTS:,} points; "
                             "use larger steps, fewer choices or another sampler")


def _meant(schema: type[BaseModel], path: str, raw: dict[str, Any]) -> str:
    """`did you mean 'model.c1'? valid keys of model: kind, c1, ...` for a space path the run lacks."""
    *section, key = path.split(".")
    hint = did_you_mean(key, section_keys(schema, section, raw))
    prefix = ".".join(section)
    hint = re.sub(r"did you mean '([^']+)'", lambda m: f"did you mean '{prefix}.{m.group(1)}'", hint)
    return hint.replace("valid keys:", f"valid keys of {prefix}:") if prefix else hint


class CVConfig(Strict):
    folds: int = Field(5, ge=2, le=20)
    # Fixed per study so every trial sees the same folds (paired comparison between trials).
    seed: Seed = 0


class SamplerConfig(Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc"] = "tpe"
    seed: Seed | None = 0
    # Random trials before the model-based sampler takes over (tpe, cmaes, gp).
    n_startup_trials: int | None = Field(None, ge=0)


class PrunerConfig(Strict):
    name: Literal["hyperband", "median", "successive_halving", "patient", "none"] = "hyperband"
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(2, ge=0)
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)


class SearchSpec(Strict):
    """The search part of a study spec: cv, sampler, pruner and space over a run schema's fields.

    Combined with a run schema (RunConfig for autoencoder studies, the fine-tune run for
    classifier studies), whose fields hold the base values each trial starts from."""

    run_schema: ClassVar[type[BaseModel]] = RunConfig

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str = ""
    cv: CVConfig = Field(default_factory=CVConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    space: dict[str, SpaceEntry] = Field(default_factory=dict)
    # Points to try first, in order: each a mapping of space paths to values (searched paths left out
    # are sampled), enqueued by `aeopt study create` (Optuna's enqueue_trial). A short study's first
    # random draw is otherwise all it has to prune against and all it may finish (issue 13: on the
    # 2-core CPU the default study's best was its first random trial at every budget).
    enqueue: list[dict[str, Any]] = Field(default_factory=list)

    def enqueued_points(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The `enqueue:` points a new study starts with, and why any other was left out.

        A point the space cannot take (a path not in it, a value outside its entry) is left out
        rather than failing the spec: `--set space.model.c1.high=16` or a replaced `space` must not
        need the shipped points edited too. A path the space fixes is dropped: the fixed value applies."""
        kinds = (IntParam, FloatParam, CategoricalParam)
        points, skipped = [], []
        for i, point in enumerate(self.enqueue):
            point = {path: _enqueue_value(self.space[path], v) if isinstance(self.space.get(path), kinds)
                     else v for path, v in point.items()}
            unknown = [path for path in point if path not in self.space]
            outside = [f"{path} = {v!r}" for path, v in point.items()
                       if isinstance(self.space.get(path), kinds) and not _contains(self.space[path], v)]
            if unknown:
                hint = did_you_mean(unknown[0], list(self.space))
                skipped.append(f"enqueue[{i}] left out: {unknown[0]} is not a key of space; {hint}")
            elif outside:
                skipped.append(f"enqueue[{i}] left out: {', '.join(outside)} outside the space")
            else:
                searched = {path: v for path, v in point.items() if isinstance(self.space[path], kinds)}
                if searched:
                    points.append(searched)
        return points, skipped

    @model_validator(mode="after")
    def _space_paths_are_run_fields(self) -> SearchSpec:
        schema = type(self).run_schema
        base = self.base_dict()
        for path, param in self.space.items():
            section = path.split(".")[0]
            if section not in schema.model_fields:
                raise ValueError(f"space.{path}: '{section}' is not a run config section; "
                                 f"{did_you_mean(section, list(schema.model_fields))}")
            for value in _probes(param):
                trial_dict = copy.deepcopy(base)
                try:
                    set_path(trial_dict, path, value)
                    schema.model_validate(trial_dict)
                except (ConfigError, ValidationError) as exc:
                    if isinstance(exc, ValidationError) and exc.errors()[0]["type"] == "extra_forbidden":
                        raise ValueError(f"space.{path}: not a field of the run config; "
                                         f"{_meant(schema, path, trial_dict)}") from None
                    if isinstance(exc, ValidationError) and exc.errors()[0]["type"] == "int_from_float" \
                            and isinstance(param, FloatParam):
                        raise ValueError(f"space.{path}: a float range on a whole-number field (a trial "
                                         f"could draw {value!r}); use type: int") from None
                    first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(f"space.{path}: the value {value!r} gives an invalid run: "
                                     f"{first}") from None
        if self.sampler.name == "grid":
            _check_grid(self.space)
        return self

    def type_choices(self) -> None:
        """Categorical choices as the run field reads them: `choices: [1e-3, 3e-3]` is two strings to PyYAML
        (YAML 1.1 wants 1.0e-3), which the run schema reads as floats, but Optuna would store and show
        the strings. Only a string the field reads as a number is replaced.

        Called on a spec read from a file, not in validation: a stored study created with the strings must
        keep them, or Optuna refuses its next trial (a categorical's choices cannot change)."""
        schema, base = type(self).run_schema, self.base_dict()
        for path, param in self.space.items():
            if not isinstance(param, CategoricalParam) or not any(isinstance(c, str) for c in param.choices):
                continue
            typed = []
            for choice in param.choices:
                if isinstance(choice, str):
                    trial_dict = copy.deepcopy(base)
                    set_path(trial_dict, path, choice)
                    # Valid: the space check probed every choice.
                    read: Any = schema.model_validate(trial_dict)
                    for part in path.split("."):
                        read = getattr(read, part)
                    if isinstance(read, (int, float)) and not isinstance(read, bool):
                        choice = read
                typed.append(choice)
            self.space[path] = CategoricalParam(type="categorical", choices=typed)

    def base_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(type(self).run_schema.model_fields))

    def run_config(self, params: dict[str, Any]) -> Any:
        """The run config of one trial: the spec's base values with the trial's params applied."""
        d = self.base_dict()
        searched = (IntParam, FloatParam, CategoricalParam)
        fixed = {k: v for k, v in self.space.items() if not isinstance(v, searched)}
        for path, value in {**fixed, **params}.items():
            set_path(d, path, value)
        return type(self).run_schema.model_validate(d)

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial can run: the pruner's maximum resource."""
        return self.budget.max_epochs


class StudySpec(RunConfig, SearchSpec):
    """An autoencoder study: a run config (the base values) plus the search."""

    task: Literal["autoencoder"] = "autoencoder"


# What a classifier spec takes from its `autoencoder:` file: every section of a run config (contrastive
# too: without it the workers would pretrain another encoder than the one exported).
_RUN_SECTIONS = tuple(RunConfig.model_fields)


class ClassifierStudySpec(FinetuneRun, SearchSpec):
    """A fine-tune run (an autoencoder config plus `finetune:`) as the base, plus the search."""

    run_schema: ClassVar[type[BaseModel]] = FinetuneRun

    task: Literal["classifier"] = "classifier"
    # A checkpoint of the autoencoder that every worker can read; null: each worker trains it.
    checkpoint: str | None = None

    @property
    def max_epochs(self) -> int:
        return self.finetune.max_epochs

    @classmethod
    def prepare_raw(cls, raw: dict[str, Any], spec_path: Path) -> dict[str, Any]:
        """Inline `autoencoder: PATH` (an `aeopt export` or run config): its run sections become the
        spec's base, under whatever the spec itself sets."""
        raw = dict(raw)
        ref = raw.pop("autoencoder", None)
        if ref is None:
            return raw
        path = _autoencoder_file(str(ref), spec_path)
        exported = read_yaml(path, first_of_list=True)  # an export with --top K: its best entry
        for key in _RUN_SECTIONS:
            if key in exported and key not in raw:
                raw[key] = exported[key]
        return raw


def _autoencoder_file(ref: str, spec_path: Path) -> Path:
    """A classifier spec's `autoencoder:`: a path from here, else from the spec's folder, else the shipped
    run config of that bare name."""
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else [path, spec_path.parent / path]
    if is_bare_name(ref):
        candidates.append(RUN_CONFIG.where / f"{ref}.yaml")
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        looked = ", ".join(str(c.absolute()) for c in candidates)
        raise ConfigError(f"{spec_path}: autoencoder = {ref!r}: no such file (looked for {looked}); "
                          "export one with `aeopt export --study NAME -o best.yaml`, or name a shipped run "
                          f"config ({', '.join(preset_names(RUN_CONFIG))})")
    return found


def _checkpoint_file(ref: str, spec_path: Path) -> Path:
    """A classifier spec's `checkpoint:`, made absolute: a path from here, else from the spec's folder.
    Stored relative, it was read from each worker's folder, and a worker started elsewhere failed."""
    path = Path(ref).expanduser()
    candidates = [path] if path.is_absolute() else [path, spec_path.parent / path]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        looked = ", ".join(str(c.absolute()) for c in candidates)
        raise ConfigError(f"{spec_path}: checkpoint = {ref!r}: no such file (looked for {looked}); pass an "
                          "autoencoder checkpoint such as a refit's checkpoint.pt, or drop it to have each "
                          "worker train the autoencoder")
    return found.absolute()


def spec_schema(raw: dict[str, Any]) -> type[SearchSpec]:
    """The spec class for a raw spec dict, by its `task` (autoencoder, the default, or classifier)."""
    task = raw.get("task", "autoencoder")
    if task == "classifier":
        return ClassifierStudySpec
    if task != "autoencoder":
        raise ConfigError(f"task = {task!r}: expected 'autoencoder' or 'classifier'")
    return StudySpec


# Keys a run config (or an export of one) never has: a spec without any of them and without a space is a
# run config given to `aeopt study create`.
_SPEC_ONLY = {*SearchSpec.model_fields, *ClassifierStudySpec.model_fields, "autoencoder"} \
    - set(FinetuneRun.model_fields)


def _refuse_run_config(raw: dict[str, Any], path: str | Path) -> None:
    """A run config given to `aeopt study create` made a study whose every trial trained that one config
    (its space was empty). A spec of the search keys without a space stays allowed (the space may come
    from --set, or a classifier spec's from its `autoencoder:`)."""
    if raw.get("space") or any(k in raw for k in _SPEC_ONLY):
        return
    raise ConfigError(f"{path} is a run config (no `space:` to search): train it with "
                      f"`{RUN_CONFIG.command} {path}`, or add a `space:` section (--set "
                      "space.model.c1='{type: int, low: 8, high: 64}') to make it a study spec")


def load_study_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """A study spec from a YAML file, or the shipped spec of that bare name (`conv_ae`)."""
    raw = read_yaml(resolve(path, STUDY_SPEC))
    overrides = list(overrides or [])
    # `--set task=...` / `--set autoencoder=best.yaml` shape how the rest is read: apply them first.
    for item in [o for o in overrides if o.split("=", 1)[0].strip() in ("task", "autoencoder")]:
        key, value = parse_override(item)
        raw[key] = value
        overrides.remove(item)
    schema = spec_schema(raw)
    if hasattr(schema, "prepare_raw"):
        raw = schema.prepare_raw(raw, resolve(path, STUDY_SPEC))
    raw = apply_overrides(raw, overrides, schema)
    _refuse_run_config(raw, path)
    spec = validate(schema, raw, str(path))
    spec.type_choices()
    if isinstance(spec, ClassifierStudySpec) and spec.checkpoint:
        spec.checkpoint = str(_checkpoint_file(spec.checkpoint, resolve(path, STUDY_SPEC)))
    return spec
