"""The search procedure of Jozefowicz et al. (2015): top-100 list, filter, task gates, re-evaluation."""

from archsearch._lazy import lazy_getattr
from archsearch.search._config import PRESETS, TRAIN_CONFIGS, SearchConfig, Strategy, preset
from archsearch.search._stage import Stage, StageKind

# The config is torch-free (read paths need only it); the driver and settings load on first use.
_LAZY = {
    "Progress": "_driver", "SearchDriver": "_driver", "evaluation_seed": "_driver", "job_train_config": "_driver",
    "stored_train_config": "_driver",
    "SOURCES": "_settings", "choose_settings": "_settings",
}  # fmt: skip

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = ["PRESETS", "SOURCES", "TRAIN_CONFIGS", "Progress", "SearchConfig", "SearchDriver", "Stage", "StageKind", "Strategy", "choose_settings", "evaluation_seed", "job_train_config", "preset", "stored_train_config"]
