"""Training one cell on one task with one hyper-parameter setting, as in the paper (§3.5-3.7)."""

from archsearch.train._config import (
    FILTER_OVERRIDES,
    FILTER_THRESHOLD,
    INIT_SCALES,
    LAYERS,
    LEARNING_RATES,
    MAX_GRAD_NORMS,
    SCALES,
    HyperParams,
    TrainConfig,
    TrainResult,
    sample_hparams,
    scale_config,
    task_config,
)
from archsearch.train._batched import BatchedSequenceModel, group_compatible, train_batched
from archsearch.train._loop import batchify, evaluate, train, train_model
from archsearch.train._model import SequenceModel, build_model, cell_param_count, model_param_count, units_for_budget

__all__ = [
    "FILTER_OVERRIDES",
    "FILTER_THRESHOLD",
    "INIT_SCALES",
    "BatchedSequenceModel",
    "LAYERS",
    "LEARNING_RATES",
    "MAX_GRAD_NORMS",
    "SCALES",
    "HyperParams",
    "SequenceModel",
    "TrainConfig",
    "TrainResult",
    "batchify",
    "build_model",
    "cell_param_count",
    "evaluate",
    "group_compatible",
    "model_param_count",
    "sample_hparams",
    "scale_config",
    "task_config",
    "train",
    "train_batched",
    "train_model",
    "units_for_budget",
]
