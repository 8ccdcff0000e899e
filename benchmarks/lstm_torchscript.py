"""A TorchScript window for the paper's LSTM (issue 15): does running the loop in TorchScript pay?

The whole window (T steps of addmm, split, gates, state update) is one ``torch.jit.script`` function, so the
loop runs in TorchScript's interpreter instead of Python and its autograd graph is TorchScript's. It is timed
against the compiled module and nn.LSTM (forward + backward, B=20, T=35, 1 thread, interleaved rounds):

    python benchmarks/lstm_torchscript.py 64
    python benchmarks/lstm_torchscript.py 64 fuse   # also ask for the CPU fuser (needs torch built with LLVM)
"""

import sys

import torch

import archsearch
from archsearch.compiler import compile_cell

from _timing import interleaved, train_step


@torch.jit.script
def lstm_window(xp: torch.Tensor, w: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """T LSTM steps over the precomputed input projections ``xp`` (T, B, 4n) with recurrent weight ``w``."""
    n = h.size(1)
    wt = w.t()
    outputs = []
    for t in range(xp.size(0)):
        i, j, f, o = torch.addmm(xp[t], h, wt).split(n, 1)
        c = c * torch.sigmoid(f) + torch.tanh(i) * torch.sigmoid(j)
        h = torch.tanh(c) * torch.tanh(o)
        outputs.append(h)
    return torch.stack(outputs), h, c


class ScriptedLSTM(torch.nn.Module):
    """The paper's LSTM (same gates as the compiled seed) with its time loop in TorchScript."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_projection = torch.nn.Linear(hidden, 4 * hidden)
        self.weight_h = torch.nn.Parameter(torch.randn(4 * hidden, hidden) * 0.1)

    def forward(self, x: torch.Tensor):
        h = x.new_zeros(x.size(1), self.hidden)
        return lstm_window(self.input_projection(x), self.weight_h, h, torch.zeros_like(h))


def main() -> None:
    hidden = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    fuse = len(sys.argv) > 2 and sys.argv[2] == "fuse"
    torch.set_num_threads(1)
    if fuse:
        torch._C._jit_override_can_fuse_on_cpu(True)
        torch._C._jit_set_texpr_fuser_enabled(True)
    cases = {"compiled": compile_cell(archsearch.seed("lstm"), hidden, hidden, seed=0),
             "script": ScriptedLSTM(hidden), "nn.LSTM": torch.nn.LSTM(hidden, hidden)}
    x, g = torch.randn(35, 20, hidden, requires_grad=True), torch.randn(35, 20, hidden)
    seconds = interleaved({name: (lambda m=model: train_step(m, x, g)) for name, model in cases.items()},
                          rounds=15, calls=3, warmup=5)
    ms = {name: v * 1e3 for name, v in seconds.items()}
    print(hidden, "fuse" if fuse else "nofuse", {k: round(v, 2) for k, v in ms.items()},
          "script/compiled", round(ms["script"] / ms["compiled"], 2))


if __name__ == "__main__":
    main()
