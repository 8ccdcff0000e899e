"""Train-step speed of compiled cells against nn.LSTM / nn.GRU and a naive per-node interpreter.

Usage:
    python benchmarks/cell_speed.py                      # the README table (1 thread, H=200)
    python benchmarks/cell_speed.py --hidden 64 200 --threads 1 --extras autograd torch-ops   # issue 15's table
    python benchmarks/cell_speed.py --threads 2 --repeats 30
    python benchmarks/cell_speed.py --torch-compile      # also time the torch.compile'd step
    python benchmarks/cell_speed.py --profile lstm       # torch.profiler table of one train step
    python benchmarks/cell_speed.py --device cuda --cuda-graphs   # GPU, also with the step captured in a CUDA graph

Each cell is timed compiled (``archsearch.compile``), as the module ``archsearch export``
writes (imported from the written file, the compiled module's weights loaded) and
walked node by node (naive); ``--extras autograd`` also times the compiled module trained by
autograd through its step instead of its generated window backward, and ``--extras torch-ops`` the
compiled module with its native elementwise stages off (torch ops only).

A train step is forward + backward of one window (B=20 lanes, T=35 steps, H
units (``--hidden``, default 200), float32, zero initial state, loss = sum(y * g)
for a fixed random g). The references are nn.LSTM, nn.GRU and a 3-layer nn.LSTM
(for the 3-layer seeds gf-lstm and hm-lstm). For every (H, threads) pair all
models are timed in the same run, interleaved round by round (so a noisy
neighbour on a shared machine slows all of them alike), after a warm-up; each
number is the median over rounds of the mean over ``--steps`` steps. With
several pairs the run ends with the summary table of issue 15 (each seed over its
reference) and writes everything to ``benchmarks/results/cell_speed.json``, with the ratios of every earlier run
of the file (``history``) and issue 15's targets. On CUDA the
clock stops after ``torch.cuda.synchronize()``; ``--cuda-graphs`` also times each
compiled cell's forward and backward captured once with
``torch.cuda.make_graphed_callables`` and replayed (one launch per pass instead
of one per kernel).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import archsearch
from archsearch.compiler import _native, compile_cell
from archsearch.export import export_class_name, export_source
from archsearch.ir import Cell, Op

from _timing import interleaved, train_step

# ---------------------------------------------------------------- config
B, T = 20, 35
# torch-lstm / torch-gru compute exactly what nn.LSTM / nn.GRU compute; the paper's lstm has 3 tanh (i, o, c)
CELLS = ("lstm", "torch-lstm", "gru", "torch-gru", "gf-lstm", "hm-lstm")
# autograd: the compiled module without its generated backward; torch-ops: without its native elementwise stages
EXTRAS = ("exported", "naive", "autograd", "torch-ops")
DEFAULT_EXTRAS = ("exported", "naive")
LSTM3 = "nn.LSTM x3"  # the reference of the 3-layer seeds
RESULTS = Path(__file__).resolve().parent / "results" / "cell_speed.json"
# issue 15's targets, 1 thread: cell -> {H: the most its step may take, as a multiple of its reference's}
TARGETS = {"lstm": {64: 1.5, 200: 1.2}, "gf-lstm": {64: 2.5}, "hm-lstm": {64: 2.5}}


# ---------------------------------------------------------------- naive interpreter
_UNARY: dict[Op, Callable] = {
    Op.TANH: torch.tanh,
    Op.SIGMOID: torch.sigmoid,
    Op.RELU: torch.relu,
    Op.IDENTITY: lambda v: v,
    Op.STEP: lambda v: v + ((v > 0.5).to(v.dtype) - v).detach(),
}
_BINARY: dict[Op, Callable] = {Op.ADD: torch.add, Op.MUL: torch.mul, Op.SUB: torch.sub}


class NaiveCell(nn.Module):
    """Walks the graph node by node every step: one matmul per linear, no fusion, no precomputed x projections.

    This is the baseline the compiler is measured against (what a straightforward
    interpreter of the IR costs). It holds one weight (and bias) per linear node.
    """

    def __init__(self, cell: Cell, input_size: int, hidden_size: int):
        super().__init__()
        self.cell = cell
        self.order = cell.topological_order()
        widths = cell.widths()
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        bound = hidden_size**-0.5
        for node in cell.linears():
            out = 1 if widths[node.name] == "1" else hidden_size
            inp = input_size if node.inputs[0] == "x" else hidden_size
            self.weights[node.name] = nn.Parameter(torch.empty(out, inp).uniform_(-bound, bound))
            if node.attr("bias"):
                self.biases[node.name] = nn.Parameter(torch.empty(out).uniform_(-bound, bound))
        self.state_widths = [1 if s.width == "1" else hidden_size for s in cell.states]
        self.slope = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = [x.new_zeros(x.shape[1], w) for w in self.state_widths]
        outputs = []
        for t in range(x.shape[0]):
            env: dict[str, object] = {"x": x[t]}
            env.update({s.name: v for s, v in zip(self.cell.states, state)})
            for name in self.order:
                node = self.cell[name]
                if node.op in (Op.INPUT, Op.STATE):
                    continue
                args = [env[i] for i in node.inputs]
                if node.op is Op.ONE:
                    env[name] = 1.0
                elif node.op is Op.LINEAR:
                    env[name] = F.linear(args[0], self.weights[name], self.biases[name] if name in self.biases else None)
                elif node.op is Op.HARD_SIGMOID:
                    slope = node.attr("slope") or self.slope
                    env[name] = torch.clamp((args[0] * slope + 1.0) * 0.5, 0.0, 1.0)
                elif node.op in _UNARY:
                    env[name] = _UNARY[node.op](args[0])
                else:
                    env[name] = _BINARY[node.op](*args)
            state = [env[o] for o in self.cell.outputs]
            outputs.append(state[0])
        return torch.stack(outputs)


class NativeOff(nn.Module):
    """A compiled stack run with its native elementwise stages off (archsearch.compiler._native): torch ops only."""

    def __init__(self, stack: nn.Module):
        super().__init__()
        self.stack = stack

    def forward(self, x: torch.Tensor):
        saved, _native.ENABLED = _native.ENABLED, False
        try:
            return self.stack(x)
        finally:
            _native.ENABLED = saved


def exported(cell: Cell, like: nn.Module, hidden: int) -> nn.Module:
    """The class ``archsearch export`` writes for ``cell``, imported from the file, with ``like``'s weights."""
    folder = Path(tempfile.mkdtemp(prefix="archsearch-export-"))
    path = folder / "exported_cell.py"
    path.write_text(export_source(cell, hidden), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"exported_{export_class_name(cell)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, export_class_name(cell))(hidden, hidden)
    model.load_state_dict(like.state_dict(), strict=True)
    return model


# ---------------------------------------------------------------- models and timing
def _models(names: tuple[str, ...], hidden: int, torch_compile: bool, device: str = "cpu",
            cuda_graphs: bool = False, extras: tuple[str, ...] = EXTRAS) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    H = hidden
    models: dict[str, nn.Module] = {"nn.LSTM": nn.LSTM(H, H), "nn.GRU": nn.GRU(H, H)}
    if any(archsearch.seed(n).depth > 1 for n in names):
        models[LSTM3] = nn.LSTM(H, H, num_layers=3)
    for name in names:
        cell = archsearch.seed(name)
        models[name] = compile_cell(cell, H, H, seed=0)
        if "exported" in extras:
            models[f"{name} (exported)"] = exported(cell, models[name], H)
        if torch_compile:
            models[f"{name} (torch.compile)"] = compile_cell(cell, H, H, seed=0, torch_compile=True)
        if "autograd" in extras:  # the same module, trained by autograd through the step (no generated backward)
            models[f"{name} (autograd)"] = compile_cell(cell, H, H, seed=0)
            models[f"{name} (autograd)"].use_generated_backward(False)
        if "torch-ops" in extras:  # the same module with its native elementwise stages off
            models[f"{name} (torch-ops)"] = NativeOff(compile_cell(cell, H, H, seed=0))
        if "naive" in extras:
            models[f"{name} (naive)"] = NaiveCell(cell, H, H)
    models = {name: model.to(device) for name, model in models.items()}
    if cuda_graphs:
        for name in names:
            try:
                models[f"{name} (CUDA graph)"] = graphed(compile_cell(archsearch.seed(name), H, H, seed=0).to(device),
                                                         H, device)
            except Exception as e:  # noqa: BLE001 - report it and time the rest
                print(f"{name}: capture failed: {type(e).__name__}: {e}")
    return models


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _Outputs(nn.Module):
    """The stack's outputs alone (what make_graphed_callables can capture: a tensor, no nested state)."""

    def __init__(self, stack: nn.Module):
        super().__init__()
        self.stack = stack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)[0]


def graphed(stack: nn.Module, hidden: int, device: str) -> nn.Module:
    """``stack``'s forward and backward captured as CUDA graphs for inputs of shape (T, B, H)."""
    return torch.cuda.make_graphed_callables(_Outputs(stack), (torch.randn(T, B, hidden, device=device),))


def measure(models: dict[str, nn.Module], hidden: int, repeats: int, steps: int, warmup: int,
            device: str = "cpu") -> dict[str, float]:
    """Median (over interleaved rounds) seconds per train step of every model."""
    x = torch.randn(T, B, hidden, device=device)
    g = torch.randn(T, B, hidden, device=device)
    compile_seconds: dict[str, float] = {}
    for name, model in models.items():
        _sync(device)
        start = time.perf_counter()
        train_step(model, x, g)  # first call: torch.compile traces and compiles here
        _sync(device)
        compile_seconds[name] = time.perf_counter() - start
    cases = {name: (lambda m=model: train_step(m, x, g)) for name, model in models.items()}
    measure.first_call = compile_seconds  # type: ignore[attr-defined]
    return interleaved(cases, repeats, steps, warmup, sync=lambda: _sync(device))


def _reference(name: str) -> str:
    if archsearch.seed(name).depth > 1:
        return LSTM3
    return "nn.GRU" if "gru" in name else "nn.LSTM"


def table(times: dict[str, float], names: tuple[str, ...], torch_compile: bool, cuda_graphs: bool = False,
          extras: tuple[str, ...] = EXTRAS) -> str:
    rows = [
        "| cell | compiled ms/step | vs reference |"
        + "".join(f" {e} ms/step | {e} / compiled |" for e in extras)
        + (" torch.compile ms/step | first call s |" if torch_compile else "")
        + (" CUDA graph ms/step | eager / graph |" if cuda_graphs else ""),
        "|---|---|---|" + "---|---|" * len(extras) + ("---|---|" if torch_compile else "")
        + ("---|---|" if cuda_graphs else ""),
    ]
    extra = " | |" * (len(extras) + torch_compile + cuda_graphs)
    for ref in ("nn.LSTM", "nn.GRU", LSTM3):
        if ref in times:
            rows.append(f"| {ref} | {times[ref] * 1e3:.2f} | 1.00 |" + extra)
    for name in names:
        ref = _reference(name)
        line = f"| {name} | {times[name] * 1e3:.2f} | {times[name] / times[ref]:.2f}x {ref} |"
        for e in extras:
            line += f" {times[f'{name} ({e})'] * 1e3:.2f} | {times[f'{name} ({e})'] / times[name]:.2f}x |"
        if torch_compile:
            tc = f"{name} (torch.compile)"
            line += f" {times[tc] * 1e3:.2f} | {measure.first_call[tc]:.1f} |"  # type: ignore[attr-defined]
        if cuda_graphs:
            cg = times.get(f"{name} (CUDA graph)")
            line += f" {cg * 1e3:.2f} | {times[name] / cg:.2f}x |" if cg else " failed | |"
        rows.append(line)
    return "\n".join(rows)


def summary(runs: list[dict], names: tuple[str, ...]) -> str:
    """Issue 15's table: one row per (H, threads), each seed's compiled step over its reference."""
    shown = [n for n in names if n in ("lstm", "gru", "gf-lstm", "hm-lstm")] or list(names)
    head = "| H | threads | " + " | ".join(f"{n} / {_reference(n)}" for n in shown) + " |"
    rows = [head, "|---|---|" + "---|" * len(shown)]
    for run in runs:
        times = run["ms_per_step"]
        rows.append(f"| {run['hidden']} | {run['threads']} | "
                    + " | ".join(f"{times[n] / times[_reference(n)]:.2f}x" for n in shown) + " |")
    return "\n".join(rows)


def digest(record: dict) -> dict:
    """One run of the benchmark in a line of its history: when, on what, and each cell's ratio to its reference."""
    references = record.get("references") or {c: _reference(c) for c in record["cells"]}
    return {"date": record["date"], "torch": record["torch"], "device": record["device"], "code": record.get("code"),
            "runs": [{"hidden": r["hidden"], "threads": r["threads"], "load_average_before": r["load_average_before"],
                      "ratio": {c: r["ms_per_step"][c] / r["ms_per_step"][references[c]]
                                for c in record["cells"] if c in r["ms_per_step"]}}
                     for r in record["runs"]]}


def with_history(record: dict, previous: dict | None) -> dict:
    """``record`` with ``history``: the runs before it (the previous file's history, or the previous run itself)
    and this one, oldest first, so a ratio that sits near its target can be seen over repeated runs."""
    earlier = [] if previous is None else previous.get("history") or [digest(previous)]
    return {**record, "targets": {c: {str(h): t for h, t in by_h.items()} for c, by_h in TARGETS.items()},
            "history": [*earlier, digest(record)]}


def _code_version() -> str | None:
    """``git describe --always --dirty`` of the checkout being measured, if it is one."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def profile(name: str, rows: int, hidden: int, device: str = "cpu") -> str:
    """torch.profiler table of 5 train steps of compiled ``name`` (self CPU time; with CUDA, self CUDA time too)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    H = hidden
    model = compile_cell(archsearch.seed(name), H, H, seed=0).to(device)
    x, g = torch.randn(T, B, H, device=device), torch.randn(T, B, H, device=device)
    for _ in range(3):
        train_step(model, x, g)
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(5):
            train_step(model, x, g)
        _sync(device)
    return prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch.set_num_threads, each in turn (default 1)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[200], help="units H, each in turn (default 200)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds; the median is reported")
    parser.add_argument("--steps", type=int, default=3, help="train steps per round and model")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cells", nargs="+", default=list(CELLS))
    parser.add_argument("--extras", nargs="*", choices=EXTRAS, default=list(DEFAULT_EXTRAS),
                        help="also time these forms of each cell (default: exported naive; none: --extras; "
                             "autograd: trained by autograd through the step instead of the generated backward; "
                             "torch-ops: without the native elementwise stages)")
    parser.add_argument("--torch-compile", action="store_true", help="also time compile_cell(..., torch_compile=True)")
    parser.add_argument("--profile", metavar="CELL", help="print a torch.profiler table of CELL instead")
    parser.add_argument("--rows", type=int, default=15, help="profiler rows")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cuda-graphs", action="store_true", help="also time the step replayed from a CUDA graph")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine")
    if args.cuda_graphs and not args.device.startswith("cuda"):
        parser.error("--cuda-graphs needs --device cuda")

    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    if args.profile:
        torch.set_num_threads(args.threads[0])
        print(f"torch {torch.__version__}, {args.threads[0]} thread(s), B={B} T={T} H={args.hidden[0]} float32 {where}")
        print(profile(args.profile, args.rows, args.hidden[0], args.device))
        return
    names, extras = tuple(args.cells), tuple(args.extras)
    runs = []
    for hidden in args.hidden:
        models = _models(names, hidden, args.torch_compile, args.device, args.cuda_graphs, extras)
        for threads in args.threads:
            torch.set_num_threads(threads)
            load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
            print(f"\ntorch {torch.__version__}, {threads} thread(s), B={B} T={T} H={hidden} float32 {where}, "
                  f"load average {load}")
            times = measure(models, hidden, args.repeats, args.steps, args.warmup, args.device)
            print(f"median of {args.repeats} interleaved rounds x {args.steps} steps, {args.warmup} warm-up steps")
            print(table(times, names, args.torch_compile, args.cuda_graphs, extras))
            runs.append({"hidden": hidden, "threads": threads, "load_average_before": load,
                         "ms_per_step": {k: v * 1e3 for k, v in times.items()}})
    print("\n" + summary(runs, names))
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "device": where, "batch": B, "unroll": T, "repeats": args.repeats,
              "steps": args.steps, "cells": list(names), "references": {n: _reference(n) for n in names}, "runs": runs,
              "load_average_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "code": _code_version()}
    previous = json.loads(args.json.read_text(encoding="utf-8")) if args.json.exists() else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(with_history(record, previous), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
