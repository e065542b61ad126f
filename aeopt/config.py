"""Typed configs: RunConfig (one fully resolved training run) and StudySpec (a search over them).

A study spec is a run config plus the search (cv, sampler, pruner, space), with the same section
names, so `--set data.train_subset=6000` works on both and an exported best trial is a run config.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aeopt.errors import ConfigError

Activation = Literal["relu", "leaky_relu", "elu", "gelu", "silu"]
DATASETS = ("fashion_mnist", "mnist", "digits", "synthetic")


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a YAML file or a --set must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConvAEConfig(_Strict):
    """The report's convolutional autoencoder; `denoising_ae` trains it on noisy inputs."""

    kind: Literal["conv_ae", "denoising_ae"] = "conv_ae"
    c1: int = Field(16, ge=1, le=512)
    c2: int = Field(32, ge=1, le=512)
    c3: int = Field(32, ge=1, le=512)
    fc: int = Field(32, ge=1, le=4096)
    latent_dim: int = Field(10, ge=1, le=1024)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    activation: Activation = "relu"
    batch_norm: bool = False
    # Std of the Gaussian noise added to training inputs (denoising_ae only; 0 for conv_ae).
    noise_std: float = Field(0.0, ge=0.0, le=2.0)

    @model_validator(mode="after")
    def _noise_matches_kind(self) -> ConvAEConfig:
        if self.kind == "denoising_ae" and self.noise_std <= 0:
            raise ValueError("noise_std must be > 0 for a denoising_ae (try 0.3)")
        if self.kind == "conv_ae" and self.noise_std != 0:
            raise ValueError("noise_std is only for kind: denoising_ae; set it to 0 or change kind")
        return self


class VAEConfig(_Strict):
    """The report's fully connected VAE: 784 -> hidden1 -> hidden2 -> (mu, logvar)."""

    kind: Literal["vae"] = "vae"
    hidden1: int = Field(512, ge=1, le=8192)
    hidden2: int = Field(256, ge=1, le=8192)
    latent_dim: int = Field(2, ge=1, le=1024)
    activation: Activation = "relu"
    # Weight of the KL term (beta-VAE, Higgins et al. 2017); 1.0 is the plain ELBO.
    beta: float = Field(1.0, ge=0.0, le=100.0)


ModelConfig = Annotated[Union[ConvAEConfig, VAEConfig], Field(discriminator="kind")]


class DataConfig(_Strict):
    dataset: Literal["fashion_mnist", "mnist", "digits", "synthetic"] = "fashion_mnist"
    # Stratified subsets for quick runs; null means the whole split.
    train_subset: int | None = Field(None, ge=20)
    test_subset: int | None = Field(None, ge=10)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = 0


class BudgetConfig(_Strict):
    max_epochs: int = Field(50, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1, le=65_536)
    # Early stopping for plain runs (`aeopt train`); 0 turns it off. Studies prune instead.
    patience: int = Field(8, ge=0)


class OptimConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(1e-5, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)


class RunConfig(_Strict):
    """Everything needed to rebuild one training run exactly."""

    model: ModelConfig = Field(default_factory=ConvAEConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    seed: int = 0


# ----- study specs -------------------------------------------------------------------------------


class IntParam(_Strict):
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


class FloatParam(_Strict):
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


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    def values(self) -> list[Any]:
        return list(self.choices)


ParamSpec = Annotated[Union[IntParam, FloatParam, CategoricalParam], Field(discriminator="type")]


class CVConfig(_Strict):
    folds: int = Field(5, ge=2, le=20)
    # Fixed per study so every trial sees the same folds (paired comparison between trials).
    seed: int = 0


class SamplerConfig(_Strict):
    name: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc"] = "tpe"
    seed: int | None = 0
    # Random trials before the model-based sampler takes over (tpe, cmaes, gp).
    n_startup_trials: int | None = Field(None, ge=0)


class PrunerConfig(_Strict):
    name: Literal["hyperband", "median", "successive_halving", "patient", "none"] = "hyperband"
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(2, ge=0)
    patience: int = Field(3, ge=0)
    min_delta: float = Field(0.0, ge=0.0)


class SearchSpec(_Strict):
    """The search part of a study spec: cv, sampler, pruner and space over a run schema's fields.

    Combined with a run schema (RunConfig for autoencoder studies, the fine-tune run for
    classifier studies), whose fields hold the base values each trial starts from."""

    run_schema: ClassVar[type[BaseModel]] = RunConfig

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str = ""
    cv: CVConfig = Field(default_factory=CVConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    space: dict[str, Union[ParamSpec, int, float, str, bool, None]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _space_paths_are_run_fields(self) -> SearchSpec:
        schema = type(self).run_schema
        base = self.base_dict()
        for path, param in self.space.items():
            if path.split(".")[0] not in schema.model_fields:
                raise ValueError(f"space key '{path}' is not a run config field ({', '.join(schema.model_fields)})")
            probes = param.values() if isinstance(param, (IntParam, CategoricalParam)) else (
                [param.low, param.high] if isinstance(param, FloatParam) else [param])
            for value in probes[:1] + probes[-1:] if not isinstance(param, CategoricalParam) else probes:
                trial_dict = copy.deepcopy(base)
                try:
                    set_path(trial_dict, path, value)
                    schema.model_validate(trial_dict)
                except (ConfigError, ValidationError) as exc:
                    first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                    raise ValueError(f"space key '{path}' with value {value!r} gives an invalid run: {first}") from None
        if self.sampler.name == "grid":
            for path, param in self.space.items():
                if isinstance(param, FloatParam) and param.step is None:
                    raise ValueError(f"grid sampler needs a finite space: give '{path}' a step or make it categorical")
        return self

    def base_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(type(self).run_schema.model_fields))

    def run_config(self, params: dict[str, Any]) -> Any:
        """The run config of one trial: the spec's base values with the trial's params applied."""
        d = self.base_dict()
        fixed = {k: v for k, v in self.space.items() if not isinstance(v, (IntParam, FloatParam, CategoricalParam))}
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


# ----- dotted paths, overrides and YAML ----------------------------------------------------------


def _split_key(d: dict[str, Any], dotted: str) -> tuple[str, str | None]:
    """First key of `dotted` in `d`, preferring the longest match (space keys contain dots)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in d:
            return head, (".".join(parts[i:]) or None)
    return parts[0], (".".join(parts[1:]) or None)


def set_path(d: dict[str, Any], dotted: str, value: Any, *, must_exist: bool = False) -> None:
    head, rest = _split_key(d, dotted)
    if rest is None:
        if must_exist and head not in d:
            raise ConfigError(f"unknown key '{dotted}'")
        d[head] = value
        return
    child = d.get(head)
    if child is None and not must_exist:
        child = d[head] = {}
    if not isinstance(child, dict):
        raise ConfigError(f"unknown key '{dotted}': '{head}' is not a section")
    try:
        set_path(child, rest, value, must_exist=must_exist)
    except ConfigError:
        raise ConfigError(f"unknown key '{dotted}'") from None


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set data.train_subset=6000")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(d: dict[str, Any], overrides: list[str], schema: type[BaseModel]) -> dict[str, Any]:
    """Apply `--set key=value` items to a raw config dict; keys must name fields of `schema`."""
    d = copy.deepcopy(d)
    for item in overrides:
        key, value = parse_override(item)
        top = key.split(".")[0]
        if top not in schema.model_fields:
            raise ConfigError(f"--set {key}: unknown key '{top}' (known: {', '.join(schema.model_fields)})")
        try:
            set_path(d, key, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {key}: {exc}") from None
    return d


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per bad field, naming the field and the value."""
    lines = []
    for err in exc.errors():
        # Drop discriminator tags (model.conv_ae.c1 -> model.c1) so paths match the YAML.
        loc = [str(p) for p in err["loc"] if p not in ("conv_ae", "denoising_ae", "vae", "int", "float", "categorical")]
        field = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("discriminator", "kind").strip("'")
            got = err["input"].get(tag) if isinstance(err.get("input"), dict) else err.get("input")
            lines.append(f"{source}: {field}.{tag} = {got!r}: expected one of {err.get('ctx', {}).get('expected_tags')}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{field}'")
        elif err["type"] == "missing":
            lines.append(f"{source}: {field} is required")
        elif isinstance(err.get("input"), dict):
            # A check across fields of a section: the whole section is not worth printing.
            lines.append(f"{source}: {field}: {msg}")
        else:
            lines.append(f"{source}: {field} = {err.get('input')!r}: {msg}")
    return "\n".join(dict.fromkeys(lines))


def validate(schema: type[BaseModel], d: Any, source: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model, data, budget, optim), got {type(d).__name__}")
    try:
        return schema.model_validate(d)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; pass the path of a YAML config (for example configs/conv_ae.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file; pass a YAML config") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty; start from configs/conv_ae.yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (model, data, budget, optim), got {type(data).__name__}")
    return data


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    raw = read_yaml(path)
    # An export carries metrics and provenance beside the run config; `train` reads only the run.
    run = {k: v for k, v in raw.items() if k in RunConfig.model_fields}
    # `finetune:` (aeopt finetune's section) is allowed too, so one file serves both commands.
    unknown = [k for k in raw if k not in RunConfig.model_fields and k not in ("metrics", "provenance", "finetune")]
    if unknown:
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(RunConfig.model_fields)})")
    run = apply_overrides(run, overrides or [], RunConfig)
    return validate(RunConfig, run, str(path))


def spec_schema(raw: dict[str, Any]) -> type[SearchSpec]:
    """The spec class for a raw spec dict, by its `task` (autoencoder, the default, or classifier)."""
    task = raw.get("task", "autoencoder")
    if task == "classifier":
        from aeopt.classifier_study import ClassifierStudySpec

        return ClassifierStudySpec
    if task != "autoencoder":
        raise ConfigError(f"task = {task!r}: expected 'autoencoder' or 'classifier'")
    return StudySpec


def load_study_spec(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    raw = read_yaml(path)
    overrides = list(overrides or [])
    # `--set task=...` / `--set autoencoder=best.yaml` shape how the rest is read: apply them first.
    for item in [o for o in overrides if o.split("=", 1)[0].strip() in ("task", "autoencoder")]:
        key, value = parse_override(item)
        raw[key] = value
        overrides.remove(item)
    schema = spec_schema(raw)
    if hasattr(schema, "prepare_raw"):
        raw = schema.prepare_raw(raw, Path(path))
    raw = apply_overrides(raw, overrides, schema)
    return validate(schema, raw, str(path))


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
