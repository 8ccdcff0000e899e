"""Training one cell on one task with one hyper-parameter setting, as in the paper (§3.5-3.7)."""

from archsearch._lazy import lazy_getattr
from archsearch.train._config import (
    FILTER_OVERRIDES,
    FILTER_THRESHOLD,
    INIT_SCALES,
    LAYERS,
    LEARNING_RATES,
    MAX_GRAD_NORMS,
    MAX_LAYERS,
    MAX_PARAMS,
    PAPER_SPACE,
    SCALES,
    SETTING_SPACES,
    TASK_OVERRIDES,
    HyperParams,
    LRSchedule,
    SettingSpace,
    TrainConfig,
    TrainResult,
    sample_hparams,
    scale_config,
    setting_space,
    task_config,
)

# Settings and configs above are torch-free, so that reading a search database (leaderboard,
# report, show --db) never pays for importing torch; the training names load on first use.
_LAZY = {
    "BatchedSequenceModel": "_batched", "batchify": "_batched", "group_compatible": "_batched",
    "evaluate": "_loop", "train": "_loop", "train_batched": "_loop", "train_model": "_loop",
    "SequenceModel": "_model", "build_model": "_model", "cell_param_count": "_model",
    "model_param_count": "_model", "units_for_budget": "_model",
}  # fmt: skip

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "FILTER_OVERRIDES",
    "FILTER_THRESHOLD",
    "INIT_SCALES",
    "BatchedSequenceModel",
    "LAYERS",
    "LEARNING_RATES",
    "MAX_GRAD_NORMS",
    "MAX_LAYERS",
    "MAX_PARAMS",
    "PAPER_SPACE",
    "SCALES",
    "SETTING_SPACES",
    "TASK_OVERRIDES",
    "HyperParams",
    "LRSchedule",
    "SequenceModel",
    "SettingSpace",
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
    "setting_space",
    "task_config",
    "train",
    "train_batched",
    "train_model",
    "units_for_budget",
]
