"""Native elementwise stages: a window's runs of elementwise ops as one generated C loop each.

At the search's sizes a step is mostly per-op overhead: each of the ~10 (LSTM) to ~100 (GF-LSTM)
elementwise ops between the step's matmuls costs a dispatch, an allocation and a pass over
memory. Where nothing needs autograd (the generated window backward's forward, which records
values for it, its reverse loop, and evaluation), a window runs its matmuls as torch calls plus
one call per *stage*: a maximal run of elementwise work whose inputs are ready, compiled from C
written here (forward: :mod:`._native_window`; backward: :mod:`._native_backward`).

* The C is size-free like the step (column offsets are ``a * n + b``), has one function per
  stage and float type (``float``, ``double``), and names values by position only: no text of
  the cell reaches it (node names are Python identifiers of the step, never of the C).
* It is compiled with the system C compiler (``$CC`` or ``cc``) into a per-process temporary
  directory, once per cell (0.1-0.3 s), and loaded with ``ctypes``. The loops vectorize, with
  glibc's vector ``exp``/``tanh`` (libmvec): without them a scalar ``tanhf`` would be slower
  than torch, so a probe checks they link and agree with torch before anything uses them.
* Rounding: the ops are torch's, one by one, without FMA contraction; ``tanh``/``exp`` come
  from libmvec (within a few ulp of torch's). Turn it off with ``ARCHSEARCH_NATIVE=0``.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from archsearch.compiler._sizes import size_code
from archsearch.ir import SCALAR, Cell, Op

log = logging.getLogger(__name__)

ENABLED = os.environ.get("ARCHSEARCH_NATIVE", "1") != "0"
DTYPES = {torch.float32: ("f32", "float", "f"), torch.float64: ("f64", "double", "")}  # name, C type, libm suffix
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-ffp-contract=off", "-fPIC", "-shared")
_PRELUDE = """#include <stdint.h>
/* glibc's vector variants (libmvec) of these functions make the loops below vectorize */
__attribute__((simd("notinbranch"), const, nothrow)) float expf(float);
__attribute__((simd("notinbranch"), const, nothrow)) float tanhf(float);
__attribute__((simd("notinbranch"), const, nothrow)) double exp(double);
__attribute__((simd("notinbranch"), const, nothrow)) double tanh(double);
"""


# ---------------------------------------------------------------- C source of one stage
@dataclass(frozen=True)
class Stage:
    """One stage: ``nodes`` (in order) computed from ``inputs`` into columns of one output buffer."""

    name: str  # the C function's name, less its type suffix
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]  # values read from outside the stage (tensors of shape (B, width))
    outputs: tuple[str, ...]  # stage nodes written to the buffer, in column order
    uses_slope: bool  # reads the module's annealed hard-sigmoid slope (per slice: see stage_head)


def _expr(cell: Cell, node: str, ref: Callable[[str], str]) -> str:
    """The C expression of ``node`` (type ``real``), its operands through ``ref``."""
    n = cell[node]
    args = [ref(i) for i in n.inputs]
    op = n.op
    if op is Op.ONE:
        return "(real)1"
    if op is Op.TANH:
        return f"TANH({args[0]})"
    if op is Op.SIGMOID:
        return f"(real)1 / ((real)1 + EXP(-{args[0]}))"
    if op is Op.RELU:  # NaN stays NaN, as torch.relu
        return f"({args[0]} <= (real)0 ? (real)0 : {args[0]})"
    if op is Op.IDENTITY:
        return args[0]
    if op is Op.HARD_SIGMOID:
        return f"hard_sigmoid(({args[0]} * {slope_of(n)} + (real)1) * (real)0.5)"
    if op is Op.STEP:  # the forward value of v + ((v > 0.5) - v).detach(), rounded as torch rounds it
        return f"({args[0]} + (({args[0]} > (real)0.5 ? (real)1 : (real)0) - {args[0]}))"
    if op in (Op.ADD, Op.SUB, Op.MUL):
        return f"({args[0]} {dict(add='+', sub='-', mul='*')[op.value]} {args[1]})"
    raise AssertionError(f"{op} is not elementwise")


def stage_source(cell: Cell, stage: Stage) -> str:
    """C of ``stage`` (its type left as ``real``): for each row b and unit j, the nodes in order. Its inputs, then
    outputs, are rows of ``tab``: (address at t = 0, bytes per step, row stride), so a call passes only t."""
    widths = cell.widths()
    scalar = {m: widths[m] == SCALAR for m in (*stage.nodes, *stage.inputs)}
    local = {name: f"v{k}" for k, name in enumerate(stage.nodes)}

    def ref(name: str) -> str:
        return local[name] if name in local else f"a{stage.inputs.index(name)}[{'0' if scalar[name] else 'j'}]"

    count = len(stage.inputs) + len(stage.outputs)
    rows = [f"    const real *a{k} = i{k} + b * s{k};" for k in range(len(stage.inputs))]
    rows += [f"    real *w{k} = i{len(stage.inputs) + k} + b * s{len(stage.inputs) + k};" for k in range(len(stage.outputs))]
    per_row, per_unit = [], []
    for name in stage.nodes:
        target = per_row if scalar[name] else per_unit
        target.append(f"real {local[name]} = {_expr(cell, name, ref)};")
        if name in stage.outputs:
            target.append(f"w{stage.outputs.index(name)}[{'0' if scalar[name] else 'j'}] = {local[name]};")
    body = [
        "  for (int64_t b = 0; b < B; b++) {",
        *rows,
        *([SLOPE] if stage.uses_slope else []),
        *(f"    {line}" for line in per_row),
        "    _Pragma(\"omp simd\")",
        "    for (int64_t j = 0; j < n; j++) {",
        *(f"      {line}" for line in per_unit),
        "    }",
        "  }",
    ]
    return "\n".join([*stage_head(stage.name, count), *body, "}"]) + "\n"


SLOPE = "    const real sl = (real)slope[b / per];"  # the hard-sigmoid slope of row b's slice


def slope_of(node) -> str:
    """A hard sigmoid's slope in C: its fixed value, or ``sl``, the module's annealed slope for the row's slice."""
    slope = node.attr("slope")
    return "sl" if slope is None else f"(real){float(slope)!r}"


def slope_lines(rows: str, table: str, pointer: str, per: str) -> list[str]:
    """Python lines that set up a stage call's ``slope, per`` (``pointer, per``) from the module's slope (one per
    slice) for ``rows`` rows; ``table`` keeps the doubles alive for the window."""
    return [f"{table} = self.slope.detach().to(torch.float64).reshape(-1)",
            f"{pointer}, {per} = {table}.data_ptr(), {rows} // {table}.numel()"]


def stage_head(name: str, count: int) -> list[str]:
    """A stage function's signature and its operands' rows at step t. Rows: B (slices x batch), contiguous in
    each operand (row stride ``s{k}``); ``slope``: one per slice, ``per`` rows each (NULL where unused); ``tab``:
    per operand (address at t = 0, bytes per step, row stride)."""
    return [f"void {name}_SUFFIX(int64_t B, int64_t n, const double *slope, int64_t per, int64_t t, const int64_t *tab) {{",
            "  (void)slope; (void)per;",
            *(f"  real *i{k} = (real *)(intptr_t)(tab[{3 * k}] + t * tab[{3 * k + 1}]); int64_t s{k} = tab[{3 * k + 2}];"
              for k in range(count))]


def library_source(stage_texts: list[str]) -> str:
    """The whole C file: each stage for ``float`` and ``double``."""
    parts = [_PRELUDE]
    for name, real, suffix in DTYPES.values():
        parts.append(f"#define real {real}\n#define EXP exp{suffix}\n#define TANH tanh{suffix}\n"
                     f"static inline real hard_sigmoid_{name}(real t) {{ return t < (real)0 ? (real)0 : "
                     f"(t > (real)1 ? (real)1 : t); }}\n#define hard_sigmoid hard_sigmoid_{name}\n")
        parts += [text.replace("_SUFFIX", f"_{name}") for text in stage_texts]
        parts.append("#undef real\n#undef EXP\n#undef TANH\n#undef hard_sigmoid\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- compiling and loading
class NativeUnavailable(RuntimeError):
    """No C compiler with libmvec here, or a stage failed to compile (the step falls back to torch)."""


_lock = threading.Lock()
_workdir: str | None = None
_libraries: dict[str, ctypes.CDLL] = {}
_why_not: str | None = None  # why the probe failed ("" if it passed; None until it runs)


def _compile(source: str) -> ctypes.CDLL:
    """Build ``source`` into a shared library in this process's temporary directory (cached by content)."""
    global _workdir
    key = hashlib.sha256(source.encode()).hexdigest()[:24]
    with _lock:
        if key in _libraries:
            return _libraries[key]
        if _workdir is None:
            _workdir = tempfile.mkdtemp(prefix="archsearch-native-")
            atexit.register(shutil.rmtree, _workdir, True)
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise NativeUnavailable("no C compiler (set CC, or install gcc)")
        src, lib = os.path.join(_workdir, f"{key}.c"), os.path.join(_workdir, f"{key}.so")
        with open(src, "w") as f:
            f.write(source)
        try:
            run = subprocess.run([compiler, *FLAGS, "-o", lib, src, "-lmvec", "-lm"], capture_output=True, text=True)
        except OSError as error:
            raise NativeUnavailable(f"cannot run the C compiler {compiler!r}: {error.strerror}") from None
        if run.returncode != 0:
            raise NativeUnavailable(f"{compiler} failed: {run.stderr.strip()[:2000]}")
        _libraries[key] = ctypes.CDLL(lib)
        return _libraries[key]


def available() -> bool:
    """Whether native stages can run here: enabled, Linux, and a probe kernel compiles, vectorizes with
    libmvec and agrees with torch (checked once per process)."""
    return not _why_off()


def describe() -> str:
    """``on``, or ``off (why)``: what a search prints when it starts."""
    why = _why_off()
    return f"off ({why})" if why else "on"


def _why_off() -> str:
    """"" where native stages can run, else why not (the probe runs once per process)."""
    global _why_not
    if not ENABLED:
        return "ARCHSEARCH_NATIVE=0"
    if not sys.platform.startswith("linux"):
        return f"not Linux: {sys.platform}"
    if _why_not is None:
        _why_not = _run_probe()
    return _why_not


def _run_probe() -> str:
    """Compile and run a probe kernel: "" if it works, else why not."""
    from archsearch.ir import parse_cell

    cell = parse_cell("cell probe\nstates h\nh' = tanh(h + x) + sigmoid(h)")
    nodes = tuple(m for m in cell.topological_order() if m not in ("x", "h"))
    stage = Stage("probe", nodes, ("h", "x"), cell.outputs, False)
    try:
        kernels = NativeKernels(library_source([stage_source(cell, stage)]), [stage])
        for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
            h = torch.linspace(-30, 30, 2 * 67, dtype=dtype).reshape(2, 67)
            x = torch.linspace(-3, 3, 2 * 67, dtype=dtype).reshape(2, 67)
            out = torch.empty_like(h)
            table = torch.tensor([[t.data_ptr(), 0, 67] for t in (h, x, out)], dtype=torch.int64)
            kernels.get(dtype)[0](2, 67, 0, 1, 0, table.data_ptr())
            if not torch.allclose(out, torch.tanh(h + x) + torch.sigmoid(h), rtol=tol, atol=tol):
                return "a probe kernel disagrees with torch"
        symbols = subprocess.run(["nm", "-D", kernels.path], capture_output=True, text=True).stdout if shutil.which("nm") else "_ZGV"
        if "_ZGV" not in symbols:
            return "the C compiler did not vectorize exp/tanh: no libmvec (glibc >= 2.35)"
    except (NativeUnavailable, OSError) as error:
        return str(error).splitlines()[0][:200]
    return ""


class NativeKernels:
    """A cell's compiled stages, per float type (built on first use)."""

    def __init__(self, source: str, stages: list[Stage]):
        self.source, self.stages = source, stages
        self._by_dtype: dict[torch.dtype, tuple[Callable, ...]] = {}
        self._library = _compile(source)
        self.path = self._library._name

    def get(self, dtype: torch.dtype) -> tuple[Callable, ...]:
        if dtype not in self._by_dtype:
            name = DTYPES[dtype][0]
            functions = []
            for stage in self.stages:
                f = getattr(self._library, f"{stage.name}_{name}")
                f.restype = None
                f.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
                functions.append(f)
            self._by_dtype[dtype] = tuple(functions)
        return self._by_dtype[dtype]


class NativeSteps:
    """A cell's generated native step functions and their C (compiled on first use, once per process)."""

    def __init__(self, step: Callable, record: Callable, backward: Callable, source: str, stages: tuple[Stage, ...],
                 raw_x: bool):
        # window(self, xs, xp, state, K) -> (ys, final state, S, V): K the stage kernels for the dtype;
        # backward(self, dys, douts, S, V, X, K): the generated window backward with its loop native
        self.step, self.record, self.backward = step, record, backward
        self.source, self.stages, self.raw_x = source, stages, raw_x
        self._kernels: NativeKernels | None = None
        self._failed = False

    def __deepcopy__(self, memo: dict) -> "NativeSteps":
        return self  # code and compiled kernels, shared by every copy of a module (ctypes pointers cannot be copied)

    def kernels_for(self, xs: torch.Tensor, xp: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple | None:
        """The stage kernels for these tensors, or None where the stages cannot read them (not CPU float32/64 of
        one dtype, not time first with each step's rows, over slices and batch, evenly spaced) or cannot run here."""
        if self._failed or not ENABLED or xp.device.type != "cpu" or xp.dtype not in DTYPES or xp.dim() not in (3, 4):
            return None
        if not _even_rows(xp) or any(s.dtype != xp.dtype or s.device != xp.device for s in state):
            return None
        if self.raw_x and (xs.dtype != xp.dtype or xs.dim() != xp.dim() or not _even_rows(xs)):
            return None
        if not available():
            return None
        if self._kernels is None:
            try:
                self._kernels = NativeKernels(self.source, list(self.stages))
            except NativeUnavailable as error:
                self._failed = True
                log.warning("a cell's native stages did not compile; it runs on torch ops: %s", error)
                return None
        return self._kernels.get(xp.dtype)


def _even_rows(tensor: torch.Tensor) -> bool:
    """Each step's rows (over the dimensions between time and units) are evenly spaced ``stride(-2)`` apart (the
    row stride the stages read), units contiguous (or no units: nothing reads them). A dimension of size 1 may
    have any stride (``contiguous()`` leaves a moved one as it is): only the others space the rows."""
    if tensor.numel() == 0:
        return True
    rows = [d for d in range(1, tensor.dim() - 1) if tensor.shape[d] != 1]
    units_contiguous = tensor.shape[-1] <= 1 or tensor.stride(-1) == 1
    even = all(tensor.stride(a) == tensor.stride(b) * tensor.shape[b] for a, b in zip(rows, rows[1:]))
    return units_contiguous and even and (not rows or tensor.stride(rows[-1]) == tensor.stride(-2))
