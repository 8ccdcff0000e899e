"""What fusing elementwise chains could give (issue 15), measured on the cell with most of them: gf-lstm.

``fused_step`` is the generated gf-lstm step with every run of one operation over adjacent columns done
as one operation (the three scalar gates of a layer: two adds and a sigmoid on 3 columns instead of 9
ops; i, f, o: one add and one sigmoid on 3n columns instead of 6 ops), by hand: the best case of a
horizontal-fusion pass in the compiler. It runs inside the compiled module (``layer._step``), is checked
against the generated step in float64 (outputs, states and every gradient), then both are timed
(B=20, T=35, 1 thread, interleaved rounds):

    python benchmarks/gf_fused_step.py 64
    python benchmarks/gf_fused_step.py 200
"""

import sys

import torch
import torch.nn.functional as F

import archsearch
from archsearch.compiler import compile_cell

from _timing import interleaved, train_step

torch.set_num_threads(1)



def fused_step(self, x, xp, h3, c3, h2, c2, h1, c1):
    n = self.hidden_size
    xp_h1, u1_W = torch.split(xp, [3 * n + 3, n], dim=-1)
    p3 = F.linear(h3, self.weight_h3)
    p2 = F.linear(h2, self.weight_h2)
    p1 = F.linear(h1, self.weight_h1)
    s1 = p1[..., :3 * n + 3] + xp_h1
    r1 = p1[..., 3 * n + 3:]
    g_s1, ifo1_add = torch.split(s1, [3, 3 * n], dim=-1)
    g3a, u1_W_3, g3b, u2_W_3, g3c, ifo3_W_1, u3_W_3 = torch.split(p3, [3, n, 3, n, 3, 3 * n, n], dim=-1)
    g2a, u1_W_2, g2b, ifo2_W_1, u2_W_2, g2c, u3_W_2 = torch.split(p2, [3, n, 3, 3 * n, n, 3, n], dim=-1)
    u1_W_1, g1b, u2_W_1, g1c, u3_W_1 = torch.split(r1, [n, 3, n, 3, n], dim=-1)
    # layer 1
    G1 = torch.sigmoid(g_s1 + g2a + g3a)
    i1, f1, o1 = torch.split(torch.sigmoid(ifo1_add), [n, n, n], dim=-1)
    a, b, c = torch.split(G1, [1, 1, 1], dim=-1)
    u1 = torch.tanh(u1_W + a * u1_W_1 + b * u1_W_2 + c * u1_W_3)
    c1_new = f1 * c1 + i1 * u1
    h1_new = o1 * torch.tanh(c1_new)
    # layer 2
    q = F.linear(h1_new, self.weight_h1_new_b, self.bias_h1_new_b)
    g_q, ifo2_W, u2_W = torch.split(q, [3, 3 * n, n], dim=-1)
    G2 = torch.sigmoid(g_q + g1b + g2b + g3b)
    i2, f2, o2 = torch.split(torch.sigmoid(ifo2_W + ifo2_W_1), [n, n, n], dim=-1)
    a, b, c = torch.split(G2, [1, 1, 1], dim=-1)
    u2 = torch.tanh(u2_W + a * u2_W_1 + b * u2_W_2 + c * u2_W_3)
    c2_new = f2 * c2 + i2 * u2
    h2_new = o2 * torch.tanh(c2_new)
    # layer 3
    r = F.linear(h2_new, self.weight_h2_new_b, self.bias_h2_new_b)
    g_r, ifo3_W, u3_W = torch.split(r, [3, 3 * n, n], dim=-1)
    G3 = torch.sigmoid(g_r + g1c + g2c + g3c)
    i3, f3, o3 = torch.split(torch.sigmoid(ifo3_W + ifo3_W_1), [n, n, n], dim=-1)
    a, b, c = torch.split(G3, [1, 1, 1], dim=-1)
    u3 = torch.tanh(u3_W + a * u3_W_1 + b * u3_W_2 + c * u3_W_3)
    c3_new = f3 * c3 + i3 * u3
    h3_new = o3 * torch.tanh(c3_new)
    return (h3_new, c3_new, h2_new, c2_new, h1_new, c1_new)


def main() -> None:
    H = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    cell = archsearch.seed("gf-lstm")
    # exactness, float64
    ref, new = (compile_cell(cell, H, H, seed=0).double() for _ in range(2))
    new.layers[0]._step = fused_step
    x = torch.randn(35, 20, H, dtype=torch.float64, requires_grad=True)
    g = torch.randn(35, 20, H, dtype=torch.float64)
    outs = []
    for m in (ref, new):
        x.grad = None
        y, st = m(x)
        (y * g).sum().backward()
        outs.append([y.detach(), *(s.detach() for s in st), x.grad.clone(), *[p.grad for p in m.parameters()]])
    print("max abs diff float64:", max(float((a - b).abs().max()) for a, b in zip(*outs)))
    gen, fus = (compile_cell(cell, H, H, seed=0) for _ in range(2))
    fus.layers[0]._step = fused_step
    x, g = torch.randn(35, 20, H, requires_grad=True), torch.randn(35, 20, H)
    cases = {"generated": gen, "fused": fus}
    seconds = interleaved({k: (lambda m=m: train_step(m, x, g)) for k, m in cases.items()}, rounds=11, calls=2)
    med = {k: v * 1e3 for k, v in seconds.items()}
    print(f"H={H} ms/step", {k: round(v, 2) for k, v in med.items()},
          f"fused/generated {med['fused'] / med['generated']:.2f}")


if __name__ == "__main__":
    main()
