"""The registry of study tasks: a spec's `task` names the objective a worker runs for it.

Adding a task means a spec schema with `task: Literal["name"]` (aeopt.config) and one entry here;
no other module asks what task a study is.
"""

from __future__ import annotations

from aeopt.config import SearchSpec
from aeopt.search.classifier_objective import ClassifierObjective
from aeopt.search.objective import AutoencoderObjective, Objective, ObjectiveFactory
from aeopt.search.storage import Storage

TASKS: dict[str, ObjectiveFactory] = {
    "autoencoder": AutoencoderObjective,
    "classifier": ClassifierObjective,
}


def make_objective(spec: SearchSpec, *, data_dir: str | None = None, device: str | None = None,
                   amp: bool = False, target_trials: int | None = None, upload_artifacts: bool = True,
                   storage: Storage | None = None) -> Objective:
    """The objective of the spec's task, built once per worker (it loads the data)."""
    factory = TASKS[spec.task]
    return factory(spec, data_dir=data_dir, device=device, amp=amp, target_trials=target_trials,
                   upload_artifacts=upload_artifacts, storage=storage)
