"""``archsearch search`` (with a live view) and ``archsearch leaderboard``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time

from archsearch.cli._options import (
    add_force,
    atomic_output,
    check_output,
    int_range,
    float_range,
    name_text,
    positive_float,
    positive_int,
    seed_int,
)
from archsearch.errors import CLIUsageError, StorageError
from archsearch.search._config import PRESETS, SearchConfig, Strategy
from archsearch.storage import DEFAULT_URL, LEASE_TIMEOUT_S, open_storage

FORMATS = ("table", "json", "csv")
# Upper bounds that catch typos (a Ray task asking for 1e30 GPUs would wait forever, unschedulable)
MAX_WORKERS = 4096
MAX_GPUS_PER_EVAL = 64.0
MAX_CPUS_PER_EVAL = 1024.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run or resume a search (the database keeps everything; rerun to resume)")
    p.add_argument("--db", default=DEFAULT_URL, help=f"SQLAlchemy URL of the leaderboard database (default {DEFAULT_URL})")
    p.add_argument("--preset", default="quick", choices=list(PRESETS), help="search size (default quick)")
    p.add_argument("--name", type=name_text, help="search name inside the database (default: the preset's name)")
    p.add_argument("--tasks", nargs="+", help="search tasks in order (default: the preset's)")
    p.add_argument("--seed", type=seed_int, help="random seed of a new search")
    p.add_argument("--strategy", choices=[s.value for s in Strategy],
                   help="evolution (the paper's, default) or random: the control with the same budget, filter and "
                        f"gates, whose proposals are chains of 1-{SearchConfig.random_chain_max} mutations of a "
                        "seed drawn uniformly (a new search only)")
    p.add_argument("--workers", type=int_range(1, MAX_WORKERS), help="trainings in flight, each one evaluation or one batched group (default: 2 in-process; Ray: fill the cluster)")
    p.add_argument("--max-evaluations", type=positive_int, help="stop after this many evaluations in total")
    p.add_argument("--time-limit", type=positive_float, help="stop starting new evaluations after this many seconds")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where workers train (default cpu)")
    p.add_argument("--data-dir", help="folder with ptb.*.txt / music pickles (must exist on every worker node)")
    p.add_argument("--ray", action="store_true", help="run evaluations on Ray workers")
    p.add_argument("--ray-address", help="join a Ray cluster: auto or ray://host:10001 (default: start a local Ray)")
    p.add_argument("--gpus-per-eval", type=float_range(0.0, MAX_GPUS_PER_EVAL), default=0.0, help="GPUs per Ray task, i.e. per evaluation or batched group (fractions share a GPU)")
    p.add_argument("--cpus-per-eval", type=float_range(0.0, MAX_CPUS_PER_EVAL), default=1.0, help="CPUs per Ray task, i.e. per evaluation or batched group")
    p.add_argument("--max-retries", type=int_range(0), default=3, help="Ray retries of a task (evaluation or group) whose worker died")
    p.add_argument("--batch-settings", type=positive_int, metavar="K",
                   help="train up to K queued settings of one cell and task that share layers and budget "
                        "as one batched model (default 20; 1: one by one)")
    p.add_argument("--report", metavar="FILE", help="write the HTML report to FILE at the end")
    p.add_argument("--take-over", action="store_true",
                   help="run the search even though another driver holds it (that driver stops at its next "
                        "write); without it, a driver that is still alive is refused, while one whose process "
                        f"ended on this machine or whose heartbeat is over {LEASE_TIMEOUT_S:.0f} s old is taken "
                        "over silently")
    p.add_argument("--no-live", action="store_true", help="plain log lines instead of the live view")
    add_force(p)
    p.set_defaults(func=run_search)

    p = sub.add_parser("leaderboard", help="the top architectures of a search (read-only; works while it runs)")
    p.add_argument("--db", default=DEFAULT_URL, help=f"database URL (default {DEFAULT_URL})")
    p.add_argument("--search", type=name_text, help="search name (default: the only / most recent one)")
    p.add_argument("--top", type=positive_int, default=20, help="how many rows (default 20)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--equations", action="store_true", help="also print each cell's equations (table format)")
    p.set_defaults(func=run_leaderboard)


# ---------------------------------------------------------------- search
def _config(args: argparse.Namespace):
    from archsearch.search import preset

    base = preset(args.preset)
    return base.with_overrides(
        name=args.name, tasks=tuple(args.tasks) if args.tasks else None, seed=args.seed,
        device=args.device, data_dir=args.data_dir, batch_settings=args.batch_settings, strategy=args.strategy,
    )


QUICK_LIMITS = {"quick": (120, 900.0)}  # (max evaluations, seconds): the README's fifteen-minute main job


def _executor(args: argparse.Namespace):
    if args.ray:
        from archsearch.executors import RayExecutor

        return RayExecutor(address=args.ray_address, slots=args.workers, num_cpus=args.cpus_per_eval,
                           num_gpus=args.gpus_per_eval, max_retries=args.max_retries)
    from archsearch.executors import InProcessExecutor

    return InProcessExecutor(args.workers or 2)


def run_search(args: argparse.Namespace) -> int:
    from archsearch.search import SearchDriver

    if args.tasks and len(set(args.tasks)) != len(args.tasks):
        raise CLIUsageError(f"--tasks lists a task twice: {' '.join(args.tasks)}")
    config = _config(args)
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise CLIUsageError("--device cuda was requested but CUDA is not available on this machine")
    max_evals, time_limit = QUICK_LIMITS.get(args.preset, (None, None))
    max_evals = args.max_evaluations if args.max_evaluations is not None else max_evals
    time_limit = args.time_limit if args.time_limit is not None else time_limit
    from archsearch.tasks import get_task

    for task in (config.filter_task, *config.tasks):
        get_task(task, config.data_dir)  # unknown task or missing data: one error line, no database created
    report = check_output(args.report, (".html",), args.force, "--report") if args.report else None
    storage = open_storage(args.db)
    if config.device == "cpu" and not args.ray:  # the workers are this process: say how they will run cells
        from archsearch.compiler._native import describe

        print(f"native elementwise stages: {describe()}", file=sys.stderr)
    view = _LiveView(config, enabled=not args.no_live and sys.stderr.isatty())
    with _executor(args) as executor, view:
        driver = SearchDriver(storage, config, executor, max_evaluations=max_evals, time_limit=time_limit,
                              on_progress=view.update, take_over=args.take_over)
        final = driver.run()
    print(
        f"search {config.name!r}: {final.done} evaluations done, {final.failed} failed, "
        f"{final.elapsed:.0f} s this run ({final.per_minute:.1f}/min); database {storage.url}"
    )
    print()
    _print_leaderboard(storage, config.name, 10, "table", False)
    if report is not None:
        from archsearch.report import write_report

        with atomic_output(report) as tmp:
            write_report(args.db, tmp, search_name=config.name)
        print(f"\nreport written to {report}")
    return 0


class _LiveView:
    """A rich live panel on stderr (or one log line per update when stderr is not a terminal)."""

    def __init__(self, config, enabled: bool):
        self.config = config
        self.enabled = enabled
        self._live = None
        self._last_line = 0.0

    def __enter__(self) -> "_LiveView":
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, p) -> None:
        if self._live is not None:
            self._live.update(self._render(p))
        elif time.monotonic() - self._last_line > 15:
            self._last_line = time.monotonic()
            top = ", ".join(f"{n} {f:.3f}" for n, f in p.top[:3])
            print(f"[{p.elapsed:6.0f}s] done {p.done} failed {p.failed} running {p.running} queued {p.queued} "
                  f"| {p.per_minute:.1f}/min | top: {top}", file=sys.stderr, flush=True)

    def _render(self, p):
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_row(f"[bold]search {self.config.name}[/]  tasks: {', '.join(self.config.tasks)}",
                     f"{p.elapsed:.0f} s, {p.per_minute:.1f} evaluations/min")
        grid.add_row(f"evaluations  done {p.done}  running {p.running}  queued {p.queued}  failed {p.failed}",
                     "stages  " + "  ".join(f"{k} {v}" for k, v in sorted(p.stages.items())))
        counters = p.counters
        grid.add_row(
            f"proposed {counters.get('proposed', 0)}  duplicates {counters.get('duplicates', 0)}  "
            f"filtered out {counters.get('filtered_out', 0)}  passed filter {counters.get('passed_filter', 0)}  "
            f"completed {counters.get('completed', 0)}  re-evaluations {counters.get('reevaluations', 0)}", "")
        top = Table(title="top 5 (fitness = min over tasks of best / GRU best)", show_edge=False)
        top.add_column("#")
        top.add_column("cell")
        top.add_column("fitness", justify="right")
        for i, (name, fit) in enumerate(p.top, 1):
            top.add_row(str(i), name, f"{fit:.4f}")
        activity = p.activity or {}
        running = activity.get("running") or {}
        workers = Table(title=f"workers ({activity.get('workers', '?')})", show_edge=False)
        workers.add_column("worker")
        workers.add_column("evaluation")
        for worker, job in sorted(running.items())[:8]:
            workers.add_row(str(worker), str(job))
        if activity.get("retries"):
            workers.caption = f"retries: {activity['retries']}"
        outer = Table.grid()
        outer.add_row(grid)
        outer.add_row(top)
        outer.add_row(workers)
        return outer


# ---------------------------------------------------------------- leaderboard
def resolve_search(storage, name: str | None):
    searches = storage.list_searches()
    if not searches:
        raise StorageError(f"no search in {storage.url} yet: run `archsearch search --db {storage.url}` first")
    if name is None:
        return max(searches, key=lambda s: s.created)
    for s in searches:
        if s.name == name:
            return s
    raise CLIUsageError(f"no search named {name!r} in {storage.url}; searches: {', '.join(s.name for s in searches)}")


def leaderboard_rows(storage, search, top: int) -> list[dict]:
    from archsearch.search import SearchConfig

    config = SearchConfig.from_dict(search.config)
    names = {a.id: a.name for a in storage.list_architectures(search.id)}
    counts: dict[int, int] = {}
    for ev in storage.evaluations(search_id=search.id, status="done"):
        counts[ev.architecture_id] = counts.get(ev.architecture_id, 0) + 1
    rows = []
    for rank, (arch, fitness, scores) in enumerate(storage.top_k(search.id, top, list(config.tasks), config.reference), 1):
        rows.append({
            "rank": rank, "id": arch.id, "name": arch.name, "parent": names.get(arch.parent_id),
            "fitness": fitness, "scores": scores, "evaluations": counts.get(arch.id, 0), "stage": arch.stage,
            "origin": arch.origin, "strategy": config.strategy.value, "graph_json": arch.graph_json,
        })
    return rows


def _print_leaderboard(storage, search_name: str | None, top: int, fmt: str, equations: bool) -> None:
    search = resolve_search(storage, search_name)
    rows = leaderboard_rows(storage, search, top)
    if fmt == "json":
        print(json.dumps([{k: v for k, v in r.items() if k != "graph_json"} for r in rows], indent=2))
        return
    tasks = list(rows[0]["scores"]) if rows else []
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["rank", "id", "name", "parent", "fitness", *tasks, "evaluations", "stage", "strategy"])
        for r in rows:
            writer.writerow([r["rank"], r["id"], r["name"], r["parent"] or "", f"{r['fitness']:.6f}",
                             *(f"{r['scores'][t]:.6f}" for t in tasks), r["evaluations"], r["stage"], r["strategy"]])
        print(buf.getvalue(), end="")
        return
    _print_table(search, rows, tasks, equations)


def _print_table(search, rows: list[dict], tasks: list[str], equations: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        print(f"search {search.name!r}: no architecture has results on every task yet")
        return
    strategy = rows[0]["strategy"]
    table = Table(title=f"search {search.name!r} ({strategy}): top {len(rows)} (scores are best / GRU best)")
    for col in ("#", "id", "cell", "parent", "fitness", *tasks, "evals"):
        table.add_column(col, justify="right" if col not in ("cell", "parent") else "left")
    for r in rows:
        table.add_row(str(r["rank"]), str(r["id"]), r["name"], r["parent"] or "-", f"{r['fitness']:.4f}",
                      *(f"{r['scores'][t]:.4f}" for t in tasks), str(r["evaluations"]))
    console = Console(width=max(100, 40 + 12 * len(tasks)))
    console.print(table)
    if equations:
        from archsearch.ir import Cell

        for r in rows:
            console.print(f"\n[bold]{r['rank']}. {r['name']}[/] (id {r['id']})")
            console.print(Cell.from_json(r["graph_json"]).equations(), markup=False)


def run_leaderboard(args: argparse.Namespace) -> int:
    storage = open_storage(args.db, read_only=True)
    _print_leaderboard(storage, args.search, args.top, args.format, args.equations)
    return 0
