"""Every schema aeopt reads (run configs, study specs, fine-tune and baseline configs), YAML I/O and `--set`.

The bottom of the house: imports nothing of aeopt's but `aeopt.errors`.
"""

from __future__ import annotations

from aeopt.config.loading import (
    apply_overrides,
    dump_yaml,
    format_validation_error,
    parse_override,
    read_yaml,
    set_path,
    validate,
)
from aeopt.config.models import (
    MODEL_KINDS,
    MODEL_SCHEMAS,
    AAEConfig,
    Activation,
    ConvAEConfig,
    ModelConfig,
    VAEConfig,
)
from aeopt.config.run import BudgetConfig, DataConfig, OptimConfig, RunConfig, load_run_config
from aeopt.config.spec import (
    CategoricalParam,
    ClassifierStudySpec,
    CVConfig,
    FloatParam,
    IntParam,
    PrunerConfig,
    SamplerConfig,
    SearchSpec,
    StudySpec,
    load_study_spec,
    spec_schema,
)
from aeopt.config.supervised import (
    BaselineRun,
    CNNConfig,
    FinetuneConfig,
    FinetuneRun,
    SupervisedConfig,
    load_baseline_config,
    load_finetune_config,
    run_config,
)

__all__ = [
    "AAEConfig",
    "MODEL_KINDS", "MODEL_SCHEMAS", "Activation", "BaselineRun", "BudgetConfig", "CNNConfig", "CVConfig",
    "CategoricalParam", "ClassifierStudySpec", "ConvAEConfig", "DataConfig", "FinetuneConfig", "FinetuneRun",
    "FloatParam", "IntParam", "ModelConfig", "OptimConfig", "PrunerConfig", "RunConfig", "SamplerConfig",
    "SearchSpec", "StudySpec", "SupervisedConfig", "VAEConfig", "apply_overrides", "dump_yaml",
    "format_validation_error", "load_baseline_config", "load_finetune_config", "load_run_config",
    "load_study_spec", "parse_override", "read_yaml", "run_config", "set_path", "spec_schema", "validate",
]
