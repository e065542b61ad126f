"""One held-out label draw for the few-label development checks (`few_labels_dev.py`,
`contrastive_dev.py`): the encoder, the draw's labelled split, and 5,000 *training* images outside
the draw as the dev set, kept out of the unlabelled images too (the test split is never read).
Imported by those scripts, which run from the repository root as `python benchmarks/NAME.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aeopt.stages.classifier_run import labelled_split
from aeopt.stages.few_labels import load_encoders
from aeopt.stages.finetune_fit import FinetuneSetup, split_xy
from aeopt.training.data import stratified_subset, to_float, training_pool

CPU = torch.device("cpu")
DEV_IMAGES = 5000


@dataclass
class Draw:
    setup: FinetuneSetup
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    dev: tuple[torch.Tensor, torch.Tensor]
    unlabelled_idx: torch.Tensor
    pool_x: torch.Tensor

    def unlabelled(self, limit: int | None = None) -> torch.Tensor:
        return to_float(self.pool_x[self.unlabelled_idx[:limit]], CPU)


def held_out_draw(checkpoint: str | None, random_like: str | None, labels: int, draw: int,
                  recipe: list[str]) -> Draw:
    """`checkpoint`'s encoder (or, with `random_like`, that checkpoint's network at random init)
    under `recipe`, with `labels` labelled images drawn by seed `draw`."""
    if checkpoint is None:
        encoders, _ = load_encoders({}, random_like, recipe, CPU)
        cfg, state = encoders["random"]
    else:
        encoders, _ = load_encoders({"ae": checkpoint}, None, recipe, CPU)
        cfg, state = encoders["ae"]
    data_cfg = cfg.data.model_copy(update={"split_seed": draw})
    cfg = cfg.model_copy(update={"data": data_cfg, "seed": draw})
    data = labelled_split(data_cfg, labels)
    pool = training_pool(data_cfg)
    rest = torch.ones(len(pool), dtype=torch.bool)
    rest[stratified_subset(pool.y, labels, draw)] = False
    rest_idx = torch.nonzero(rest).flatten()
    # A fixed permutation: every draw's dev set is scored the same way across settings.
    perm = torch.randperm(len(rest_idx), generator=torch.Generator().manual_seed(99))
    dev_idx, unl_idx = rest_idx[perm[:DEV_IMAGES]], rest_idx[perm[DEV_IMAGES:]]
    return Draw(
        setup=FinetuneSetup(cfg, state, len(data.classes), CPU),
        train=split_xy(data.train, CPU), val=split_xy(data.val, CPU),
        dev=(to_float(pool.x[dev_idx], CPU), pool.y[dev_idx]),
        unlabelled_idx=unl_idx, pool_x=pool.x)
