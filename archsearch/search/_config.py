"""Search configuration: every number of the paper's procedure is a field with the paper's default."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from archsearch.errors import SearchConfigError
from archsearch.storage._lease import HEARTBEAT_S, LEASE_TIMEOUT_S

TRAIN_CONFIGS = "train_configs"  # key of a stored search config: each task's TrainConfig when the search started
# Fields that define the search; changing them on resume would mix two different searches.
_DEFINING = (
    "tasks", "filter_task", "seeds", "reference", "scale", "train_overrides", "filter_overrides",
    "settings_per_task", "init_settings_per_task", "reference_settings_per_task", "gate", "filter_threshold", "top_size",
    "p_reevaluate", "parent_settings_threshold", "seed", "strategy", "random_chain_max",
)


class Strategy(str, enum.Enum):
    """How a step picks the architecture it proposes."""

    EVOLUTION = "evolution"  # §3.1: mutate (or re-evaluate) a member of the top list
    # the control of issue 12: a seed drawn uniformly, mutated 1..random_chain_max times (uniform), no top list
    # and no re-evaluation; the child goes through the same filter, settings and gates
    RANDOM = "random"


def _check_overrides(label: str, overrides: dict[str, Any]) -> None:
    """Refuse overrides that are not :class:`~archsearch.train.TrainConfig` fields or values it refuses, here
    rather than in every evaluation on the workers."""
    from archsearch.errors import ArchsearchError
    from archsearch.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SearchConfigError(f"{label}: {', '.join(map(repr, unknown))} is not a training setting; "
                                f"known: {', '.join(sorted(known))}")
    try:
        replace(TrainConfig(), **overrides)
    except (TypeError, ValueError, ArchsearchError) as e:
        raise SearchConfigError(f"{label}: {e}") from None


@dataclass(frozen=True)
class SearchConfig:
    """The search procedure of Jozefowicz et al. (2015) §3.1-3.3 (paper defaults)."""

    name: str = "default"
    tasks: tuple[str, ...] = ("arithmetic", "xml", "ptb")  # searched in this order; fitness = min over them
    filter_task: str = "memorize"
    seeds: tuple[str, ...] = ("lstm", "gru", "gf-lstm", "hm-lstm")
    reference: str = "gru"  # the normaliser: fitness = min over tasks of best / reference's best
    scale: str = "paper"  # training scale preset (see archsearch.train.SCALES)
    train_overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields for the search tasks
    filter_overrides: dict[str, Any] = field(default_factory=dict)  # on top of archsearch.train.task_config's filter
    settings_per_task: int = 20  # §3.1: settings per task for a candidate (and for a re-evaluation)
    init_settings_per_task: int = 20  # settings per task for each seed but the reference at initialisation
    # settings per task for the reference (the normaliser), evaluated before anything else (None: as
    # init_settings_per_task); the paper evaluated the GRU on all 1,680 allowed settings (840 on PTB). Its best
    # per task is fixed when initialisation ends: every later gate and fitness divides by those numbers.
    reference_settings_per_task: int | None = None
    gate: float = 0.9  # §3.1: go on to the next task only if best > gate * reference best
    filter_threshold: float = 0.95  # §3.1: memorization accuracy needed to pass the filter
    top_size: int = 100  # §3.1: the top-100 list
    p_reevaluate: float = 0.2  # §3.1 gives no number: probability that a step re-evaluates
    parent_settings_threshold: int = 420  # §3.3: > this many parent settings -> 80/20 rule
    seed: int = 0
    strategy: Strategy = Strategy.EVOLUTION  # (a string value is accepted and converted)
    random_chain_max: int = 10  # Strategy.RANDOM: a proposal is a chain of 1..this many mutations of a seed
    # run-time only (may change between runs of the same search)
    data_dir: str | None = None
    device: str = "cpu"
    # train up to this many queued settings of one cell and task that share layers and budget as one batched
    # model (same results as one by one, see archsearch.train.train_batched); 1: one by one
    batch_settings: int = 20
    # step functions and plans each worker process keeps compiled: an LRU of this many entries each
    # (archsearch.compiler.set_cache_size; the default is archsearch.compiler.DEFAULT_CACHE_SIZE)
    compile_cache_size: int = 256
    # one driver per search (archsearch.storage._lease): the driver renews its lease every heartbeat_every
    # seconds; a holder on another machine whose heartbeat is older than lease_timeout seconds is gone
    lease_timeout: float = LEASE_TIMEOUT_S
    heartbeat_every: float = HEARTBEAT_S

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "strategy", Strategy(self.strategy))
        except ValueError:
            raise SearchConfigError(f"unknown strategy {self.strategy!r}; choose one of "
                                    f"{', '.join(s.value for s in Strategy)}") from None
        if not self.tasks:
            raise SearchConfigError("a search needs at least one task")
        if self.reference not in self.seeds:
            raise SearchConfigError(f"the reference cell {self.reference!r} must be one of the seeds {list(self.seeds)}")
        checks = [
            (0 < self.gate <= 1, f"gate must be in (0, 1], got {self.gate}"),
            (0 <= self.filter_threshold <= 1, f"filter_threshold must be in [0, 1], got {self.filter_threshold}"),
            (0 <= self.p_reevaluate <= 1, f"p_reevaluate must be in [0, 1], got {self.p_reevaluate}"),
            (self.settings_per_task >= 1, "settings_per_task must be at least 1"),
            (self.init_settings_per_task >= 1, "init_settings_per_task must be at least 1"),
            (self.reference_settings_per_task is None or self.reference_settings_per_task >= 1,
             "reference_settings_per_task must be at least 1"),
            (self.top_size >= 1, "top_size must be at least 1"),
            (self.random_chain_max >= 1, "random_chain_max must be at least 1"),
            (self.batch_settings >= 1, "batch_settings must be at least 1"),
            (self.compile_cache_size >= 1, "compile_cache_size must be at least 1"),
            (0 < self.heartbeat_every < self.lease_timeout,
             f"heartbeat_every must be positive and below lease_timeout, got {self.heartbeat_every} and "
             f"{self.lease_timeout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SearchConfigError(message)
        for label, overrides in (("train_overrides", self.train_overrides), ("filter_overrides", self.filter_overrides)):
            _check_overrides(label, overrides)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"], data["seeds"] = list(self.tasks), list(self.seeds)
        data["strategy"] = self.strategy.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        for key in ("tasks", "seeds"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def with_overrides(self, **changes: Any) -> "SearchConfig":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def defining(self) -> dict[str, Any]:
        data = self.to_dict()
        return {k: data[k] for k in _DEFINING}

    def check_compatible(self, stored: dict[str, Any]) -> None:
        """Raise :class:`SearchConfigError` if this config contradicts the one a search was started with."""
        old = SearchConfig.from_dict(stored).defining()
        new = self.defining()
        diffs = [f"{k}: stored {old[k]!r}, given {new[k]!r}" for k in _DEFINING if old[k] != new[k]]
        if diffs:
            raise SearchConfigError(
                f"search {self.name!r} was started with a different configuration ({'; '.join(diffs)}); "
                "resume it without those options, or start a new search with --name or another --db"
            )


PRESETS: dict[str, SearchConfig] = {
    # The README's main job: a real search on the bundled small tasks, minutes on 2 CPU cores.
    "quick": SearchConfig(
        name="quick",
        tasks=("arithmetic", "xml", "ptb-mini"),
        scale="tiny",
        # The LSTM and GRU only: a run of the 3-layer GF-LSTM and HM-LSTM costs 3-6 times an LSTM's at this size
        # (issue 15), and with all four seeds initialization took the whole quick budget (23 runs in 8.5 minutes
        # on 2 cores). Runs of 24 epochs (1,200 SGD steps, patience 8) instead of tiny's 40, and few settings.
        seeds=("lstm", "gru"),
        train_overrides={"max_epochs": 24, "patience": 8},
        settings_per_task=2,
        init_settings_per_task=2,
        reference_settings_per_task=3,
        # At this scale (a few hundred SGD steps) the paper's LSTM reaches about 0.3 on memorization;
        # 0.95 would reject every child. The filter still removes cells that learn nothing.
        filter_threshold=0.25,
        filter_overrides={"max_epochs": 6},  # 120 minibatches of the filter's 25K-parameter model
    ),
    # The quick search's structure (LSTM and GRU seeds, few settings) at the `small` scale (longer runs on harder
    # tasks, which separate the gated cells better; README "Signal"): 1-4 CPU-minutes a run, a few hours
    # for a few hundred evaluations on 2 cores. The evolution-versus-random experiment at `small` uses it.
    "medium": SearchConfig(
        name="medium",
        tasks=("arithmetic", "xml", "ptb-mini"),
        scale="small",
        seeds=("lstm", "gru"),
        settings_per_task=2,
        init_settings_per_task=2,
        reference_settings_per_task=3,
    ),
    # A laptop-sized search: real learning, hours on a workstation.
    "small": SearchConfig(
        name="small",
        tasks=("arithmetic", "xml", "ptb-mini"),
        scale="small",
        settings_per_task=10,
        init_settings_per_task=10,
        reference_settings_per_task=30,
    ),
    # The paper's procedure and sizes (needs PTB in --data-dir and a GPU cluster).
    "paper": SearchConfig(
        name="paper",
        scale="paper",
        reference_settings_per_task=200,
    ),
}


def preset(name: str) -> SearchConfig:
    if name not in PRESETS:
        raise SearchConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
