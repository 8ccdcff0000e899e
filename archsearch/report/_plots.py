"""The report's charts, in two interchangeable back ends.

``plotly``: interactive (hover shows the cell and its setting, zoom, toggle lines);
plotly.js is inlined once in the page head, so the file opens offline.
``svg``: static matplotlib SVG inlined in the page; much smaller, no JavaScript.
Both take the plain records of :mod:`archsearch.report._data` and return HTML.
"""

from __future__ import annotations

import io
import math
from typing import Protocol

from archsearch.ir.draw import compact_svg
from archsearch.report._data import HPARAM_KEYS, HParamPoint, Timeline

BACKENDS = ("plotly", "svg")
_HPARAM_TITLES = {"lr": "learning rate", "init_scale": "init scale", "max_grad_norm": "gradient clip",
                  "layers": "layers"}
_LOG_AXES = ("lr", "init_scale", "max_grad_norm")  # the paper samples these on a log grid
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]


class Plots(Protocol):
    def head(self) -> str: ...
    def timeline(self, tl: Timeline) -> str: ...
    def hparams(self, points: list[HParamPoint], tasks: list[str]) -> str: ...


def make_plots(backend: str) -> Plots:
    """The chart back end called ``backend`` (``plotly`` or ``svg``)."""
    if backend == "plotly":
        return PlotlyPlots()
    if backend == "svg":
        return SvgPlots()
    raise ValueError(f"unknown plot back end {backend!r}; choose one of {', '.join(BACKENDS)}")


def _colour(rank: int) -> str:
    return _PALETTE[(rank - 1) % len(_PALETTE)]


def _cells(points: list[HParamPoint]) -> list[tuple[int, str]]:
    return sorted({(p.rank, p.cell) for p in points})


# ==================================================================== plotly
class PlotlyPlots:
    """Interactive charts; plotly.js (about 4.7 MB) is inlined once by :meth:`head`."""

    def __init__(self) -> None:
        self._count = 0

    def head(self) -> str:
        from plotly.offline import get_plotlyjs

        return f'<script type="text/javascript">{get_plotlyjs()}</script>'

    def _html(self, fig) -> str:
        self._count += 1
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{self._count}",
                           config={"displaylogo": False, "responsive": True})

    def timeline(self, tl: Timeline) -> str:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                            subplot_titles=("against finished evaluations", "against wall-clock time"))
        for col, xs in ((1, tl.evaluations), (2, tl.minutes)):
            self._timeline_lines(fig, tl, xs, col)
        if tl.arrivals:
            names, evals, minutes, fits = zip(*tl.arrivals)
            for col, xs in ((1, evals), (2, minutes)):
                fig.add_scatter(x=list(xs), y=list(fits), mode="markers", name="architectures on the list",
                                legendgroup="arrivals", showlegend=col == 1, text=list(names), row=1, col=col,
                                marker={"size": 5, "color": "rgba(80,80,80,0.45)"},
                                hovertemplate="%{text}<br>fitness now %{y:.4f}<extra></extra>")
        fig.update_xaxes(title_text="evaluations finished", row=1, col=1)
        fig.update_xaxes(title_text="minutes since the search started", row=1, col=2)
        fig.update_yaxes(title_text="fitness (best / reference best)", row=1, col=1)
        fig.update_layout(height=430, margin={"l": 60, "r": 20, "t": 40, "b": 50}, template="plotly_white",
                          legend={"orientation": "h", "y": -0.22}, hovermode="closest")
        return self._html(fig)

    @staticmethod
    def _timeline_lines(fig, tl: Timeline, xs: list, col: int) -> None:
        lines = [("best fitness", tl.best, {"width": 3, "color": "#d62728"}),
                 ("mean of the top 10", tl.top10, {"width": 2, "color": "#1f77b4"})]
        for i, (task, ys) in enumerate(tl.per_task.items()):
            lines.append((f"best {task} / reference", ys, {"width": 1.3, "dash": "dot", "color": _PALETTE[2 + i]}))
        for name, ys, line in lines:
            fig.add_scatter(x=list(xs), y=ys, mode="lines", name=name, legendgroup=name, showlegend=col == 1,
                            line={**line, "shape": "hv"}, row=1, col=col, connectgaps=False)

    def hparams(self, points: list[HParamPoint], tasks: list[str]) -> str:
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=len(tasks), cols=len(HPARAM_KEYS), shared_yaxes=True, vertical_spacing=0.08,
                            horizontal_spacing=0.03,
                            subplot_titles=[f"{t}: {_HPARAM_TITLES[k]}" for t in tasks for k in HPARAM_KEYS])
        for rank, cell in _cells(points):
            mine = [p for p in points if p.cell == cell]
            for r, task in enumerate(tasks, 1):
                on_task = [p for p in mine if p.task == task]
                for c, key in enumerate(HPARAM_KEYS, 1):
                    fig.add_scatter(
                        x=[p.hparams.get(key) for p in on_task], y=[p.score for p in on_task], mode="markers",
                        name=f"{rank}. {cell}", legendgroup=cell, showlegend=(r, c) == (1, 1), row=r, col=c,
                        marker={"color": _colour(rank), "size": 7, "opacity": 0.75,
                                "symbol": ["x" if p.diverged else "circle" for p in on_task]},
                        text=[_setting(p) for p in on_task], hovertemplate="%{text}<extra></extra>",
                    )
        for c, key in enumerate(HPARAM_KEYS, 1):
            fig.update_xaxes(type="log" if key in _LOG_AXES else "linear", row=len(tasks), col=c,
                             title_text=_HPARAM_TITLES[key])
            for r in range(1, len(tasks)):
                fig.update_xaxes(type="log" if key in _LOG_AXES else "linear", row=r, col=c)
        for r, task in enumerate(tasks, 1):
            fig.update_yaxes(title_text=f"{task} metric", row=r, col=1)
        fig.update_layout(height=260 * len(tasks) + 80, template="plotly_white", hovermode="closest",
                          margin={"l": 60, "r": 20, "t": 40, "b": 50})
        return self._html(fig)


def _setting(p: HParamPoint) -> str:
    hp = ", ".join(f"{k}={p.hparams[k]:g}" for k in HPARAM_KEYS if isinstance(p.hparams.get(k), (int, float)))
    return f"{p.rank}. {p.cell} on {p.task}: {p.score:.4f}{' (diverged)' if p.diverged else ''}<br>{hp}"


# ==================================================================== svg
class SvgPlots:
    """Static charts as inline matplotlib SVG (text kept as text, so it stays small)."""

    def head(self) -> str:
        return ""

    @staticmethod
    def _svg(fig) -> str:
        import matplotlib

        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "archsearch"}):
            fig.savefig(buf, format="svg", bbox_inches="tight")
        return f'<div class="svgplot">{compact_svg(buf.getvalue())}</div>'

    def timeline(self, tl: Timeline) -> str:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

        fig = Figure(figsize=(13, 4.2))
        axes = fig.subplots(1, 2, sharey=True)
        for ax, xs, label in ((axes[0], tl.evaluations, "evaluations finished"),
                              (axes[1], tl.minutes, "minutes since the search started")):
            ax.step(xs, _nan(tl.best), where="post", color="#d62728", linewidth=2.5, label="best fitness")
            ax.step(xs, _nan(tl.top10), where="post", color="#1f77b4", linewidth=1.8, label="mean of the top 10")
            for i, (task, ys) in enumerate(tl.per_task.items()):
                ax.step(xs, _nan(ys), where="post", color=_PALETTE[2 + i], linestyle=":", linewidth=1.3,
                        label=f"best {task} / reference")
            if tl.arrivals:
                col = 1 if label.startswith("evaluations") else 2
                ax.scatter([a[col] for a in tl.arrivals], [a[3] for a in tl.arrivals], s=9, color="#555555",
                           alpha=0.45, label="architectures on the list")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("fitness (best / reference best)")
        axes[0].legend(fontsize=8, loc="lower right")
        return self._svg(fig)

    def hparams(self, points: list[HParamPoint], tasks: list[str]) -> str:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(13, 2.6 * len(tasks) + 0.6))
        axes = fig.subplots(len(tasks), len(HPARAM_KEYS), sharey="row", squeeze=False)
        for rank, cell in _cells(points):
            for r, task in enumerate(tasks):
                mine = [p for p in points if p.cell == cell and p.task == task]
                for c, key in enumerate(HPARAM_KEYS):
                    axes[r][c].scatter([p.hparams.get(key) for p in mine], [p.score for p in mine], s=14,
                                       color=_colour(rank), alpha=0.75, label=f"{rank}. {cell}" if r == c == 0 else None)
        for r, task in enumerate(tasks):
            axes[r][0].set_ylabel(f"{task} metric")
            for c, key in enumerate(HPARAM_KEYS):
                axes[r][c].set_xscale("log" if key in _LOG_AXES else "linear")
                axes[r][c].grid(alpha=0.3)
                axes[r][c].set_title(f"{task}: {_HPARAM_TITLES[key]}", fontsize=9)
        if points:
            fig.legend(loc="upper center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, 1.04))
        fig.tight_layout()
        return self._svg(fig)


def _nan(ys: list[float | None]) -> list[float]:
    return [math.nan if y is None else y for y in ys]
