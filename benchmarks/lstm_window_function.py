"""What a generated backward per window could give (issue 15), measured on its best case: the paper's LSTM.

The window is one ``torch.autograd.Function``: the forward runs without autograd and saves what the
backward needs; the backward is written by hand (what a source-to-source generator would emit at best,
with the recurrent weight's gradient taken once per window). It is checked against the compiled module
in float64, then timed against the compiled module and nn.LSTM (B=20, T=35, 1 thread, interleaved):

    python benchmarks/lstm_window_function.py 64
    python benchmarks/lstm_window_function.py 200
"""

import sys

import torch

import archsearch
from archsearch.compiler import compile_cell

from _timing import interleaved

torch.set_num_threads(1)


class LSTMWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, W, h, c):  # xp (T,B,4n) incl. bias; W (4n, n)
        n = h.shape[-1]
        Wt = W.t()
        hs, saved = [], []
        for xp_t in xp.unbind(0):
            s = torch.addmm(xp_t, h, Wt)
            i, o = torch.tanh(s[:, :n]), torch.tanh(s[:, 3 * n:])
            jf = torch.sigmoid(s[:, n:3 * n])
            j, f = jf[:, :n], jf[:, n:]
            c_new = torch.addcmul(c * f, i, j)
            tc = torch.tanh(c_new)
            h_new = tc * o
            saved.append((h, c, i, j, f, o, tc))
            h, c = h_new, c_new
            hs.append(h)
        ctx.saved, ctx.W = saved, W
        return torch.stack(hs), h, c

    @staticmethod
    def backward(ctx, dhs, dh_last, dc_last):
        W = ctx.W
        dh, dc = dh_last.clone(), dc_last.clone()
        dss, hprev = [], []
        for t in range(len(ctx.saved) - 1, -1, -1):
            h, c, i, j, f, o, tc = ctx.saved[t]
            dh = dh + dhs[t]
            do = dh * tc
            dc = dc + dh * o * (1 - tc * tc)
            di, dj, df = dc * j, dc * i, dc * c
            dc = dc * f
            ds = torch.cat([di * (1 - i * i), dj * j * (1 - j), df * f * (1 - f), do * (1 - o * o)], -1)
            dh = ds @ W
            dss.append(ds)
            hprev.append(h)
        dss.reverse()
        hprev.reverse()
        dxp = torch.stack(dss)
        dW = dxp.flatten(0, 1).t() @ torch.stack(hprev).flatten(0, 1)
        return dxp, dW, dh, dc



def fn_step(layer, x, g):
    xp = layer.input_projections(x)
    B, n = x.shape[1], layer.hidden_size
    z = x.new_zeros(B, n)
    y, _, _ = LSTMWindow.apply(xp, layer.weight_h, z, z)
    (y * g).sum().backward()



def module_step(stack, x, g):
    y, _ = stack(x)
    (y * g).sum().backward()



def main() -> None:
    H = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    stack = compile_cell(archsearch.seed("lstm"), H, H, seed=0)
    layer = stack.layers[0]
    x, g = torch.randn(35, 20, H, requires_grad=True), torch.randn(35, 20, H)
    # exactness in float64
    s64 = compile_cell(archsearch.seed("lstm"), H, H, seed=0).double()
    l64 = s64.layers[0]
    x64, g64 = x.detach().double().requires_grad_(), g.double()
    module_step(s64, x64, g64)
    ref = [x64.grad.clone()] + [p.grad.clone() for p in s64.parameters()]
    x64.grad = None
    s64.zero_grad()
    fn_step(l64, x64, g64)
    got = [x64.grad] + [p.grad for p in s64.parameters()]
    print("max abs diff float64:", max(float((a - b).abs().max()) for a, b in zip(ref, got)))
    nn_lstm = torch.nn.LSTM(H, H)

    def nn_step():
        y, _ = nn_lstm(x)
        (y * g).sum().backward()

    cases = {"nn.LSTM": nn_step, "compiled": lambda: module_step(stack, x, g),
             "window Function": lambda: fn_step(layer, x, g)}
    med = {k: v * 1e3 for k, v in interleaved(cases, rounds=15, calls=3, warmup=3).items()}
    print(f"H={H} ms/step", {k: round(v, 2) for k, v in med.items()},
          f"compiled/nn.LSTM {med['compiled'] / med['nn.LSTM']:.2f}",
          f"window/nn.LSTM {med['window Function'] / med['nn.LSTM']:.2f}",
          f"window/compiled {med['window Function'] / med['compiled']:.2f}")


if __name__ == "__main__":
    main()
