"""A TorchScript window for the paper's LSTM (issue 15): does running the loop in TorchScript pay?

The whole window (T steps of addmm, split, gates, state update) is one ``torch.jit.script`` function, so the
loop runs in TorchScript's interpreter instead of Python and its autograd graph is TorchScript's. It is timed
against the compiled module and nn.LSTM (forward + backward, B=20, T=35, 1 thread, interleaved rounds):

    python benchmarks/lstm_torchscript.py 64
    python benchmarks/lstm_torchscript.py 64 fuse   # also ask for the CPU fuser (needs torch built with LLVM)
"""
import statistics
import sys
import time

import torch

import archsearch
from archsearch.compiler import compile_cell
torch.set_num_threads(1)
H = int(sys.argv[1]) if len(sys.argv) > 1 else 64
fuse = len(sys.argv) > 2 and sys.argv[2] == "fuse"
if fuse:
    torch._C._jit_override_can_fuse_on_cpu(True)
    torch._C._jit_set_texpr_fuser_enabled(True)

@torch.jit.script
def window(xp: torch.Tensor, W: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    n = h.size(1)
    Wt = W.t()
    outs = []
    for t in range(xp.size(0)):
        s = torch.addmm(xp[t], h, Wt)
        i, j, f, o = s.split(n, 1)
        c = c * torch.sigmoid(f) + torch.tanh(i) * torch.sigmoid(j)
        h = torch.tanh(c) * torch.tanh(o)
        outs.append(h)
    return torch.stack(outs), h, c

ref = compile_cell(archsearch.seed("lstm"), H, H, seed=0)

class TS(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.wx = torch.nn.Linear(H, 4 * H)
        self.wh = torch.nn.Parameter(torch.randn(4 * H, H) * 0.1)
    def forward(self, x):
        B = x.size(1)
        h = x.new_zeros(B, H); c = x.new_zeros(B, H)
        return window(self.wx(x), self.wh, h, c)

ts = TS()
x, g = torch.randn(35, 20, H, requires_grad=True), torch.randn(35, 20, H)
def step(m):
    y = m(x)[0]
    m.zero_grad(set_to_none=True)
    (y * g).sum().backward()
cases = {"compiled": ref, "script": ts, "nn.LSTM": torch.nn.LSTM(H, H)}
for m in cases.values():
    for _ in range(5): step(m)
times = {k: [] for k in cases}
for _ in range(15):
    for k, m in cases.items():
        t = time.perf_counter()
        for _ in range(3): step(m)
        times[k].append((time.perf_counter() - t) / 3)
med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
print(H, "fuse" if fuse else "nofuse", {k: round(v, 2) for k, v in med.items()}, "script/compiled", round(med["script"] / med["compiled"], 2))
