"""``archsearch train``: train one cell on one task with one hyper-parameter setting.

Progress (a bar over epochs with loss, validation metric and lr) goes to stderr;
stdout gets one summary line, or with ``--json`` one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from archsearch.cli._cells import load_cell
from archsearch.cli._options import int_range, positive_float, seed_int
from archsearch.errors import CLIUsageError

# Defaults for hyper-parameters the user leaves out (all inside the paper's ranges, §3.7);
# the parameter budget defaults to the task's first (smallest) budget.
DEFAULT_LR = 1.0
DEFAULT_INIT_SCALE = 1.0
DEFAULT_MAX_GRAD_NORM = 5.0
DEFAULT_LAYERS = 1
# Per-task defaults that replace the ones above. Memorization: lr 1 / clip 5 takes SGD to ~0.90 quickly and then
# hovers there (the clipped step is too long); a smaller step with a larger init passes 0.95 in about half the
# minibatches (benchmarks/memorize_filter.py, README "Training a cell").
DEFAULT_SETTINGS: dict[str, dict[str, float]] = {
    "memorize": {"lr": 0.5, "init_scale": 2.0, "max_grad_norm": 10.0},
}


def _default_help(name: str, default: float) -> str:
    """``default`` and the tasks that default to another value (``DEFAULT_SETTINGS``), for ``--help``."""
    others = [f"{task}: {values[name]:g}" for task, values in DEFAULT_SETTINGS.items() if name in values]
    return f"{default:g}" + (f"; {', '.join(others)}" if others else "")


def register(sub: argparse._SubParsersAction) -> None:
    from archsearch.train import MAX_LAYERS, MAX_PARAMS

    p = sub.add_parser("train", help="train one cell on one task with one hyper-parameter setting")
    p.add_argument("--cell", required=True, help="a seed name or a cell JSON file")
    p.add_argument("--task", required=True, help="task name (see archsearch.tasks.task_names())")
    add_run_options(p)
    p.add_argument("--lr", type=positive_float, help=f"SGD learning rate (default {_default_help('lr', DEFAULT_LR)})")
    p.add_argument("--init-scale", type=positive_float,
                   help=f"weights ~ U[-x, x], x = scale/sqrt(n) (default {_default_help('init_scale', DEFAULT_INIT_SCALE)})")
    p.add_argument("--max-grad-norm", type=positive_float,
                   help=f"gradient clipping norm (default {_default_help('max_grad_norm', DEFAULT_MAX_GRAD_NORM)})")
    p.add_argument("--layers", type=int_range(1, MAX_LAYERS), help=f"stacked layers (default {DEFAULT_LAYERS})")
    p.add_argument("--params", type=int_range(1, MAX_PARAMS),
                   help="parameter budget before the scale's factor (default: the task's first)")
    p.add_argument("--allow-any", action="store_true", help="accept values outside the paper's ranges")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run_train)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``baselines``."""
    from archsearch.train import SCALES

    p.add_argument("--scale", default="small", choices=list(SCALES), help="epoch sizes and budgets (default small)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the weights and generated data (default 0)")
    p.add_argument("--data-dir", help="folder with the PTB files or the music pickles")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    # Default 1: the models are small (20 x a few hundred matmuls), so more threads mostly add synchronisation;
    # on a 2-core machine a second thread makes these steps slower (benchmarks/cell_speed.py --threads 1 2).
    p.add_argument("--threads", type=int_range(1, 1024), default=1, help="torch CPU threads (default 1)")


def setup_torch(args: argparse.Namespace) -> None:
    """Check ``--device`` and ``--threads`` before any work starts."""
    import torch

    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise CLIUsageError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIUsageError("--device cuda was requested but CUDA is not available on this machine")
    if args.threads < 1:
        raise CLIUsageError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)


def load_task(name: str, data_dir: str | None):
    """The task, with its data read once now so a missing or unreadable file fails before training."""
    from archsearch.tasks import get_task

    task = get_task(name, data_dir)
    if not task.synthetic:
        task.stream("valid", 0, 1)
    return task


def finite(value: Any) -> Any:
    """``value`` with every NaN/inf float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def summary(result) -> str:
    """One line: the task's metric, test value, epochs, time and size."""
    if result.diverged:
        status = "DIVERGED (metric 0)"
    else:
        status = f"valid {result.metric_name} {result.valid:.4f}  test {result.test:.4f}"
        if result.perplexity is not None:
            status += f"  perplexity {result.perplexity:.1f}"
    return (f"{result.task}: {status}  metric {result.metric:.4f}  {result.epochs} epochs  {result.seconds:.1f} s  "
            f"{result.params} params  {result.units} units")


def run_train(args: argparse.Namespace) -> int:
    from archsearch.train import task_config, train

    cell = load_cell(args.cell).validate()
    task = load_task(args.task, args.data_dir)
    hp = hparams_from_args(args, task)
    setup_torch(args)
    config = task_config(args.scale, task)
    with EpochProgress(f"{cell.name} on {task.name}", max_epochs(config)) as progress:
        result = train(cell, task, hp, config, seed=args.seed, device=args.device, on_epoch=progress.update)
    if args.json:
        record = {**result.to_dict(), "cell": cell.name, "hparams": hp.to_dict(), "scale": args.scale,
                  "seed": args.seed, "device": args.device, "config": config.__dict__}
        print(json.dumps(finite(record), sort_keys=True))
    else:
        print(summary(result))
    return 0


def hparams_from_args(args: argparse.Namespace, task):
    """The setting from the options, defaults filled in, checked against the paper's ranges."""
    from archsearch.train import HyperParams

    defaults = {"lr": DEFAULT_LR, "init_scale": DEFAULT_INIT_SCALE, "max_grad_norm": DEFAULT_MAX_GRAD_NORM,
                "layers": DEFAULT_LAYERS, "params": task.param_budgets[0], **DEFAULT_SETTINGS.get(task.name, {})}
    given = {name: getattr(args, name) for name in defaults}
    values = {name: defaults[name] if given[name] is None else given[name] for name in defaults}
    return HyperParams.from_dict(values).check(task.param_budgets, args.allow_any)


def max_epochs(config) -> int:
    return config.epoch_limit


class EpochProgress:
    """A rich progress bar on stderr over the epochs of one run (loss, validation metric, lr)."""

    def __init__(self, title: str, epochs: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=Console(stderr=True), transient=False,
        )
        self.bar = self.progress.add_task(title, total=epochs, stats="")

    def __enter__(self) -> "EpochProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, info: dict) -> None:
        stats = f"loss {info['loss']:.3f}  valid {info['valid']:.4f}  lr {info['lr']:g}"
        self.progress.update(self.bar, completed=info["epoch"], stats=stats)
