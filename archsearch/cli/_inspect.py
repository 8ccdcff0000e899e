"""Look up architectures in a search database: ``show --db`` and ``export``."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack

from archsearch.cli._options import add_force, atomic_output, check_output, int_range, name_text
from archsearch.errors import CLIUsageError
from archsearch.ir import Cell
from archsearch.storage import DEFAULT_URL, open_storage


MAX_HIDDEN_SIZE = 65_536  # units of an exported module (the paper's largest models have a few thousand)


def register(sub: argparse._SubParsersAction) -> None:
    from archsearch.train import MAX_LAYERS

    p = sub.add_parser("export", help="write a cell as a standalone PyTorch module (needs only torch)")
    p.add_argument("cell", help="architecture id or name in --db, a seed name, or a cell JSON file")
    p.add_argument("--db", help=f"search database (e.g. {DEFAULT_URL}); without it CELL is a seed or JSON file")
    p.add_argument("--search", type=name_text, help="search name inside the database (default: the most recent)")
    p.add_argument("-o", "--output", required=True, help="the .py file to write")
    p.add_argument("--hidden-size", type=int_range(1, MAX_HIDDEN_SIZE),
                   help="default hidden_size of the class, which takes any size (default: the best setting's, or 200)")
    p.add_argument("--layers", type=int_range(1, MAX_LAYERS),
                   help="default num_layers of the class (default: the best setting's, or 1)")
    p.add_argument("--weights", metavar="FILE", help="also train the best setting again and save its weights (safetensors)")
    p.add_argument("--task", help="task whose best setting gives the weights (default: the first search task)")
    p.add_argument("--data-dir", help="data folder for PTB/music when retraining for --weights")
    add_force(p)
    p.set_defaults(func=run_export)


def find_architecture(storage, search, spec: str):
    arch = None
    if spec.isdigit():
        try:
            arch = storage.get_architecture(int(spec))
        except Exception:  # noqa: BLE001 - reported below as one clear line
            arch = None
        if arch is not None and arch.search_id != search.id:
            arch = None
    if arch is None:
        arch = storage.find_architecture(search.id, name=spec)
    if arch is None:
        raise CLIUsageError(f"no architecture {spec!r} in search {search.name!r} (see `archsearch leaderboard`)")
    return arch


def lineage(storage, arch) -> list:
    """``arch`` and its ancestors back to a seed, newest first."""
    chain = [arch]
    while chain[-1].parent_id is not None and len(chain) < 10_000:
        chain.append(storage.get_architecture(chain[-1].parent_id))
    return chain


def best_settings(storage, arch_id: int) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for ev in storage.evaluations(architecture_id=arch_id, status="done"):
        if ev.task not in best or (ev.metric or 0.0) > (best[ev.task]["metric"] or 0.0):
            best[ev.task] = {"metric": ev.metric, "valid": ev.valid, "test": ev.test, "hparams": ev.hparams,
                             "evaluation": ev.id, "units": (ev.result or {}).get("units")}
    return best


def show_from_db(url: str, search_name: str | None, spec: str, as_json: bool = False) -> Cell:
    from archsearch.cli._search import resolve_search
    from archsearch.mutation import MutationRecord

    storage = open_storage(url, read_only=True)
    search = resolve_search(storage, search_name)
    arch = find_architecture(storage, search, spec)
    cell = Cell.from_json(arch.graph_json)
    chain = lineage(storage, arch)
    best = best_settings(storage, arch.id)
    if as_json:
        print(json.dumps({"id": arch.id, "name": arch.name, "stage": arch.stage, "graph": json.loads(arch.graph_json),
                          "lineage": [{"id": a.id, "name": a.name, "mutation": a.mutation} for a in chain],
                          "best": best, "scores": storage.best_scores(arch.id)}, indent=2))
        return cell
    print(f"{arch.name}  (id {arch.id}, {arch.origin}, stage {arch.stage}, {len(cell)} nodes)\n")
    print(cell.equations())
    print("\nlineage (newest first):")
    for a in chain:
        print(f"  {a.id:>5}  {a.name}")
        if a.mutation:
            for line in MutationRecord.from_dict(a.mutation).describe().splitlines():
                print(f"         {line}")
    print("\nbest setting per task:")
    for task, b in sorted(best.items()):
        hp = ", ".join(f"{k}={v:g}" for k, v in b["hparams"].items())
        print(f"  {task:12s} {b['metric']:.4f}  (valid {b['valid']}, test {b['test']}; {hp})")
    return cell


def _usage(cell: Cell, module: str, hidden: int, layers: int) -> str:
    """How to import and construct the exported class (two indented lines)."""
    from archsearch.export import export_class_name

    cls = export_class_name(cell)
    states = [s.name for s in cell.states]
    hx = states[0] if len(states) == 1 else f"({', '.join(states)})" if len(states) == 2 else "hx"
    load = f"from {module} import {cls}" if module.isidentifier() else f"# import {cls} from the written file"
    return (f"    {load}\n    rnn = {cls}(input_size, hidden_size={hidden}, num_layers={layers})"
            f"   # output, {hx} = rnn(input)")


def run_export(args: argparse.Namespace) -> int:
    from archsearch.cli._cells import load_cell
    from archsearch.export import export_class_name, export_source
    from archsearch.tasks import task_names

    output = check_output(args.output, (".py",), args.force, "-o")
    weights = check_output(args.weights, (".safetensors",), args.force, "--weights") if args.weights else None
    if weights is not None and not args.db:
        raise CLIUsageError("--weights needs --db: the weights come from retraining the search's best setting")
    if args.task is not None and args.task not in task_names():
        raise CLIUsageError(f"unknown task {args.task!r}; tasks: {', '.join(task_names())}")
    best: dict[str, dict] = {}
    if args.db:
        from archsearch.cli._search import resolve_search

        storage = open_storage(args.db, read_only=True)
        search = resolve_search(storage, args.search)
        arch = find_architecture(storage, search, args.cell)
        cell = Cell.from_json(arch.graph_json)
        best = best_settings(storage, arch.id)
        tasks = list(search.config.get("tasks", []))
        task = args.task or (tasks[0] if tasks else None)
    else:
        cell, task = load_cell(args.cell), args.task
    chosen = best.get(task) if task else None
    if weights is not None and chosen is None:
        raise CLIUsageError(f"--weights: architecture {args.cell!r} has no result on task {task!r} to retrain")
    hidden = args.hidden_size or (chosen or {}).get("units") or 200
    layers = args.layers or (1 if cell.depth > 1 else (chosen or {}).get("hparams", {}).get("layers", 1))
    source = export_source(cell, int(hidden), int(layers))
    with ExitStack() as stack:  # both files appear together at the end, or neither does
        tmp = stack.enter_context(atomic_output(output))
        tmp.write_text(source, encoding="utf-8")
        if weights is not None:
            from archsearch.cli._train import load_task
            from archsearch.export import retrain_weights

            load_task(task, args.data_dir or search.config.get("data_dir"))  # data missing: fail before training
            info = retrain_weights(cell, task, chosen["hparams"], search.config,
                                   str(stack.enter_context(atomic_output(weights))), data_dir=args.data_dir)
    like = "nn.GRU" if len(cell.states) == 1 else "nn.LSTM"
    print(f"wrote {output}: class {export_class_name(cell)} for cell {cell.name!r}, {like}'s interface, any sizes")
    print(_usage(cell, output.stem, int(hidden), int(layers)))
    if weights is not None:
        print(f"wrote {weights}: weights of the best {task} setting (valid {info['valid']:.4f})")
    return 0
