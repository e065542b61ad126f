"""A spec's `enqueue:` points are a new study's first trials, in order; then the sampler takes over."""

from __future__ import annotations

from aeopt.config import StudySpec
from aeopt.search.space import suggest
from aeopt.search.storage import open_storage
from aeopt.search.studies import create_study


def test_enqueued_points_come_first_in_order(tmp_path):
    space = {"model.c1": {"type": "int", "low": 8, "high": 32},
             "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    points = [{"model.c1": 29, "optim.lr": 2e-3}, {"model.c1": 9}]
    spec = StudySpec.model_validate({"name": "q", "space": space, "enqueue": points,
                                     "sampler": {"name": "random", "seed": 0}})
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = create_study(storage, spec)
    drawn = []
    for _ in range(3):
        trial = study.ask()
        drawn.append(suggest(trial, spec.space))
        study.tell(trial, 1.0)
    assert drawn[0] == {"model.c1": 29, "optim.lr": 2e-3}
    assert drawn[1]["model.c1"] == 9 and 1e-4 <= drawn[1]["optim.lr"] <= 1e-2  # the rest is sampled
    assert drawn[2] not in points
    # Reusing the study (--skip-if-exists) enqueues nothing again.
    create_study(storage, spec, skip_if_exists=True)
    assert suggest(study.ask(), spec.space) != points[0]
