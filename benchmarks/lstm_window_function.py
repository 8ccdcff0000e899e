"""What a generated backward per window could give (issue 15), measured on its best case: the paper's LSTM.

The window is one ``torch.autograd.Function``: the forward runs without autograd and saves what the
backward needs; the backward is written by hand, as a source-to-source generator could emit it, with the
recurrent weight's gradient taken once per window. Two backward passes:

* ``per-step`` (:class:`LSTMWindow`): the chain rule step by step, local derivatives included (~20 ops a step);
* ``vectorized`` (:class:`LSTMWindowVec`): every local derivative (``1 - tanh^2``, ``s (1 - s)`` and their
  products along each path) computed for all steps at once before the loop, leaving 5 ops a step.

Both are checked against the compiled module in float64, then timed against it and nn.LSTM (B=20, T=35, 1 thread,
interleaved rounds); ``--json FILE`` appends the measurement (``experiments/render.py`` shows the file):

    python benchmarks/lstm_window_function.py --hidden 64 200 --json benchmarks/results/lstm_window_function.json
"""

import argparse
import datetime
import json
import os
from pathlib import Path

import torch

import archsearch
from archsearch.compiler import compile_cell

from _timing import interleaved, train_step

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



class LSTMWindowVec(torch.autograd.Function):
    """The same window; the backward computes the local derivatives for all steps at once (5 ops a step)."""

    @staticmethod
    def forward(ctx, xp, W, h, c):  # xp (T,B,4n) incl. bias; W (4n, n); gates i, j, f, o
        n = h.shape[-1]
        Wt = W.t()
        saved: dict[str, list[torch.Tensor]] = {k: [] for k in ("h", "c", "i", "j", "f", "o", "tc")}
        for xp_t in xp.unbind(0):
            s = torch.addmm(xp_t, h, Wt)
            i, o = torch.tanh(s[:, :n]), torch.tanh(s[:, 3 * n:])
            jf = torch.sigmoid(s[:, n:3 * n])
            j, f = jf[:, :n], jf[:, n:]
            for k, v in (("h", h), ("c", c), ("i", i), ("j", j), ("f", f), ("o", o)):
                saved[k].append(v)
            c = torch.addcmul(c * f, i, j)
            tc = torch.tanh(c)
            h = tc * o
            saved["tc"].append(tc)
        stacked = [torch.stack(saved[k]) for k in ("h", "c", "i", "j", "f", "o", "tc")]
        ctx.save_for_backward(W, *stacked)
        outputs = torch.cat([stacked[0][1:], h.unsqueeze(0)])
        return outputs, h, c

    @staticmethod
    def backward(ctx, dhs, dh_last, dc_last):
        W, H, C, I, J, F, O, TC = ctx.saved_tensors
        T, B, n = I.shape
        A = O * (1 - TC * TC)  # dc += dh * A
        D3 = torch.stack([J * (1 - I * I), I * J * (1 - J), C * F * (1 - F)], dim=2)  # d(i, j, f pre-activations) / dc
        Do = TC * (1 - O * O)  # d(o pre-activation) / dh
        da = dhs.new_empty(T, B, 4 * n)
        da3, dao = da[..., :3 * n].view(T, B, 3, n), da[..., 3 * n:]
        dh, dc = dhs[T - 1] + dh_last, dc_last
        for t in range(T - 1, -1, -1):
            dc = torch.addcmul(dc, dh, A[t])
            torch.mul(dc.unsqueeze(1), D3[t], out=da3[t])
            torch.mul(dh, Do[t], out=dao[t])
            dc = dc * F[t]
            dh = torch.addmm(dhs[t - 1], da[t], W) if t > 0 else da[t] @ W
        dW = da.flatten(0, 1).t() @ H.flatten(0, 1)
        return da, dW, dh, dc


def fn_step(layer, x, g, window=LSTMWindow):
    xp = layer.input_projections(x)
    B, n = x.shape[1], layer.hidden_size
    z = x.new_zeros(B, n)
    y, _, _ = window.apply(xp, layer.weight_h, z, z)
    (y * g).sum().backward()



def exactness(H: int, window) -> float:
    """Largest difference from the compiled module's gradients (input and every parameter), float64."""
    s64 = compile_cell(archsearch.seed("lstm"), H, H, seed=0).double()
    x64, g64 = torch.randn(35, 20, H, dtype=torch.float64, requires_grad=True), torch.randn(35, 20, H, dtype=torch.float64)
    train_step(s64, x64, g64)
    ref = [x64.grad.clone()] + [p.grad.clone() for p in s64.parameters()]
    x64.grad = None
    s64.zero_grad()
    fn_step(s64.layers[0], x64, g64, window)
    return max(float((a - b).abs().max()) for a, b in zip(ref, [x64.grad] + [p.grad for p in s64.parameters()]))


def measure(H: int) -> dict:
    stack = compile_cell(archsearch.seed("lstm"), H, H, seed=0)
    layer = stack.layers[0]
    x, g = torch.randn(35, 20, H, requires_grad=True), torch.randn(35, 20, H)
    nn_lstm = torch.nn.LSTM(H, H)

    cases = {"nn.LSTM": lambda: train_step(nn_lstm, x, g), "compiled": lambda: train_step(stack, x, g),
             "per-step": lambda: fn_step(layer, x, g), "vectorized": lambda: fn_step(layer, x, g, LSTMWindowVec)}
    load = os.getloadavg()[0]
    ms = {k: v * 1e3 for k, v in interleaved(cases, rounds=15, calls=3, warmup=3).items()}
    return {"hidden": H, "load_average_before": load, "ms_per_step": ms,
            "max_abs_diff_float64": {"per-step": exactness(H, LSTMWindow), "vectorized": exactness(H, LSTMWindowVec)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("hidden_size", nargs="*", type=int, help="(as --hidden)")
    p.add_argument("--hidden", nargs="+", type=int, default=[64])
    p.add_argument("--json", type=Path, help="append the measurement to this file")
    args = p.parse_args()
    runs = [measure(H) for H in (args.hidden_size or args.hidden)]
    for run in runs:
        ms = run["ms_per_step"]
        print(f"H={run['hidden']} ms/step", {k: round(v, 2) for k, v in ms.items()},
              *(f"{k}/compiled {ms[k] / ms['compiled']:.2f}" for k in ("per-step", "vectorized")),
              f"compiled/nn.LSTM {ms['compiled'] / ms['nn.LSTM']:.2f}", "float64 diff", run["max_abs_diff_float64"])
    if args.json:
        doc = json.loads(args.json.read_text()) if args.json.exists() else {"benchmark": "lstm_window_function",
                                                                            "measurements": []}
        doc["measurements"].append({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                    "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": runs})
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
