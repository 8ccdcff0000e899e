"""The search procedure of Jozefowicz et al. (2015): top-100 list, filter, task gates, re-evaluation."""

from archsearch.search._config import PRESETS, SearchConfig, preset
from archsearch.search._driver import Progress, SearchDriver, evaluation_seed, job_train_config
from archsearch.search._settings import SOURCES, choose_settings

__all__ = ["PRESETS", "SOURCES", "Progress", "SearchConfig", "SearchDriver", "choose_settings", "evaluation_seed", "job_train_config", "preset"]
