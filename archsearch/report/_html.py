"""The report page: one self-contained HTML document built from :mod:`archsearch.report._data`.

Every string that comes from the database (names, errors, configs) goes through
:func:`html.escape`. There are no external links: styles are inline, charts are
inline SVG or plotly with its JavaScript in the page head.
"""

from __future__ import annotations

import html
import json
from typing import Any, Iterable

from archsearch.report import _data as D
from archsearch.report._plots import Plots

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1320px;
 padding:0 24px 60px;color:#222;line-height:1.45}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
h3{margin:28px 0 6px}nav a{margin-right:14px}.muted{color:#777}.notice{background:#fff4d6;border:1px solid #f0c36d;
 padding:12px 16px;border-radius:6px;margin:16px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #eee;
 text-align:right;vertical-align:top}th{background:#f6f6f6}td.l,th.l{text-align:left}
tr:hover td{background:#fafafa}pre{background:#f7f7f7;padding:10px 12px;border-radius:4px;overflow-x:auto;
 font-size:13px}.cell{border:1px solid #e3e3e3;border-radius:8px;padding:4px 18px 14px;margin:18px 0}
.picture{overflow:auto;border:1px solid #eee;border-radius:4px;background:#fff;cursor:zoom-in}
.picture svg{max-height:900px;max-width:100%;width:auto;height:auto}.picture.full{cursor:zoom-out}
.picture.full svg{max-height:none;max-width:none}
.bar{background:#6baed6;height:14px;display:inline-block;border-radius:2px}.bar.cut{background:#fc9272}
.svgplot svg{max-width:100%;height:auto}ol.lineage{padding-left:22px}ol.lineage li{margin:4px 0}
details{margin:4px 0}code{font-size:13px}.grid{display:flex;gap:28px;flex-wrap:wrap}
"""

_SECTIONS = [("fitness", "Fitness over time"), ("top", "Top cells"), ("cells", "Cells"), ("funnel", "Funnel"),
             ("hparams", "Hyper-parameters"), ("facts", "Run facts")]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(headers: Iterable[str] | None, rows: Iterable[Iterable[str]], left: int | set[int] = 0) -> str:
    """An HTML table; cells are HTML already.

    ``left``: the first ``left`` columns, or the columns in a set, align left (numbers align right).
    """
    lefts = set(range(left)) if isinstance(left, int) else left

    def cells(tag: str, values: Iterable[str]) -> str:
        return "".join(f'<{tag}{" class=l" if i in lefts else ""}>{v}</{tag}>' for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    head = f"<thead><tr>{cells('th', headers)}</tr></thead>" if headers is not None else ""
    return f"<table>{head}<tbody>{body}</tbody></table>"


def page(data: D.ReportData, plots: Plots, pictures: dict[int, str]) -> str:
    """The whole document."""
    title = f"archsearch report: {data.search.name}" if data.search else "archsearch report"
    if data.search is None:
        body = _empty(data)
    else:
        body = "".join([_header(data), _notice(data), _fitness(data, plots), _top(data), _cells(data, pictures),
                        _funnel(data), _hparams(data, plots), _facts(data)])
    head = plots.head() if data.search is not None and data.mutants else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style>{head}'
            f"</head><body>{body}</body></html>\n")


def _empty(data: D.ReportData) -> str:
    return (f"<h1>archsearch report</h1><p class=muted>{esc(data.url)} · generated {data.generated:%Y-%m-%d %H:%M} UTC</p>"
            f'<div class="notice" id="no-search"><b>No search in this database yet.</b> '
            f"Start one with <code>archsearch search --db {esc(data.url)}</code>, then run "
            f"<code>archsearch report</code> again.</div>")


def _header(data: D.ReportData) -> str:
    s = data.search
    assert s is not None
    others = [n for n in data.searches if n != s.name]
    nav = "".join(f'<a href="#{k}">{t}</a>' for k, t in _SECTIONS)
    also = f" · other searches in this database: {esc(', '.join(others))} (use --search)" if others else ""
    return (f"<h1>Search <i>{esc(s.name)}</i></h1>"
            f"<p class=muted>{esc(data.url)} · status {esc(s.status)} · started {s.created:%Y-%m-%d %H:%M} UTC · "
            f"report generated {data.generated:%Y-%m-%d %H:%M} UTC · strategy {esc(data.strategy)} · "
            f"tasks {esc(', '.join(data.tasks))} · "
            f"fitness = min over tasks of best / {esc(data.reference)} best{also}</p><nav>{nav}</nav>")


def _notice(data: D.ReportData) -> str:
    if data.mutants:
        return ""
    done = sum(e.status == "done" for e in data.evals if e.purpose == "init")
    total = sum(e.purpose == "init" for e in data.evals)
    return (f'<div class="notice" id="no-mutants"><b>No mutants yet.</b> The search is still evaluating its seed '
            f"cells ({done} of {total} initial evaluations done); the fitness curves, funnel and hyper-parameter "
            f"view fill in once mutation starts. Regenerate this page later.</div>")


# ---------------------------------------------------------------- sections
def _fitness(data: D.ReportData, plots: Plots) -> str:
    head = '<h2 id="fitness">Fitness over time</h2>'
    if not data.mutants:
        return head + "<p class=muted>Nothing to plot before the first mutant.</p>"
    tl = D.timeline(data)
    if not any(v is not None for v in tl.best):
        return head + "<p class=muted>No architecture has a fitness yet (the reference needs a result on every task).</p>"
    norms = ("the search's frozen normalizers, as on the leaderboard" if data.search and data.search.normalizers
             else "normalizers = the reference's best so far, until the search freezes them")
    return (head + f"<p class=muted>Fitness after each finished evaluation ({norms}); dotted lines: the best normalized score on each task by any cell; dots: each "
            "architecture on the list when it got its last task score, at its fitness now.</p>" + plots.timeline(tl))


def _top(data: D.ReportData) -> str:
    head = f'<h2 id="top">Top {len(data.top) or ""} cells</h2>'
    if not data.top:
        return head + "<p class=muted>No architecture has a result on every task yet.</p>"
    rows = []
    for r in data.top:
        parent = f'<a href="#cell-{r.arch.parent_id}">{esc(r.parent)}</a>' if _in_top(data, r.arch.parent_id) else esc(r.parent or "–")
        rows.append([str(r.rank), f'<a href="#cell-{r.arch.id}">{esc(r.arch.name)}</a>', esc(r.arch.origin), parent,
                     f"<b>{num(r.fitness)}</b>", *(num(r.scores.get(t)) for t in data.tasks), str(r.evaluations),
                     esc(r.arch.stage)])
    headers = ["#", "cell", "origin", "parent", "fitness", *(esc(t) for t in data.tasks), "evaluations", "stage"]
    return head + "<p class=muted>Scores are the cell's best on each task divided by the reference's best.</p>" + \
        table(headers, rows, left=4)


def _in_top(data: D.ReportData, arch_id: int | None) -> bool:
    return arch_id is not None and any(r.arch.id == arch_id for r in data.top)


def _cells(data: D.ReportData, pictures: dict[int, str]) -> str:
    head = '<h2 id="cells">Cells</h2>'
    if not data.top:
        return head + "<p class=muted>No top cells yet.</p>"
    return head + "".join(_cell(data, r, pictures.get(r.arch.id, "")) for r in data.top)


def _cell(data: D.ReportData, row: D.TopRow, picture: str) -> str:
    from archsearch.ir import Cell

    arch = row.arch
    cell = Cell.from_json(arch.graph_json)
    states = ", ".join(s.name for s in cell.states)
    return (f'<section class="cell" id="cell-{arch.id}"><h3>{row.rank}. {esc(arch.name)} '
            f'<span class=muted>(id {arch.id}, {esc(arch.origin)}, fitness {num(row.fitness)})</span></h3>'
            f"<p class=muted>{len(cell)} nodes · states {esc(states)} · depth {cell.depth}</p>"
            f'<pre class="equations">{esc(cell.equations())}</pre>'
            f'<div class="picture" title="click to zoom" onclick="this.classList.toggle(\'full\')">{picture}</div>'
            f'<div class="grid"><div><h4>Lineage (newest first)</h4>{_lineage(data, arch)}</div>'
            f"<div><h4>Best setting per task</h4>{_best(data, arch.id)}</div></div></section>")


def _lineage(data: D.ReportData, arch) -> str:
    items = []
    for a in D.lineage(data, arch):
        if a.origin == "seed" or a.mutation is None:
            items.append(f"<li><b>{esc(a.name)}</b> <span class=muted>(seed)</span></li>")
            continue
        step = a.mutation.get("step")
        lines = "<br>".join(esc(line) for line in D.describe_mutation(a.mutation)) or "<i>no transform recorded</i>"
        items.append(f"<li><b>{esc(a.name)}</b> <span class=muted>(id {a.id}, step {esc(step)}, from "
                     f"{esc(a.mutation.get('parent', a.parent_id))})</span><br><code>{lines}</code></li>")
    return f'<ol class="lineage">{"".join(items)}</ol>'


def _best(data: D.ReportData, arch_id: int) -> str:
    best = D.best_settings(data, arch_id)
    if not best:
        return "<p class=muted>no finished evaluation</p>"
    rows = []
    for task, ev in sorted(best.items()):
        hp = ev.hparams
        rows.append([esc(task), num(ev.metric), num(ev.valid), num(ev.test), _g(hp.get("lr")), _g(hp.get("init_scale")),
                     _g(hp.get("max_grad_norm")), _g(hp.get("layers")), _g(hp.get("params")),
                     _g((ev.result or {}).get("units")), str(ev.id)])
    return table(["task", "metric", "valid", "test", "lr", "init", "clip", "layers", "params", "units", "eval"], rows, 1)


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else esc(value if value is not None else "–")


def _funnel(data: D.ReportData) -> str:
    head = '<h2 id="funnel">Funnel</h2>'
    rows = D.funnel(data)
    top = max(rows[0].count, 1)
    lines = []
    for r in rows:
        width = max(1, round(360 * r.count / top)) if r.count else 0
        bar = f'<span class="bar{" cut" if r.level else ""}" style="width:{width}px"></span>'
        label = ("&nbsp;&nbsp;&nbsp;− " if r.level else "") + esc(r.label)
        lines.append([label, str(r.count), bar, f"<span class=muted>{esc(r.note)}</span>"])
    note = ("<p class=muted>From the driver's counters (a re-examined architecture is counted again when it passes "
            "the filter or a gate); red rows are what was taken away at that step.</p>")
    return head + note + table(["step", "count", "", ""], lines, left={0, 2})


def _hparams(data: D.ReportData, plots: Plots) -> str:
    head = '<h2 id="hparams">Hyper-parameters of the top cells</h2>'
    points = D.hparam_points(data)
    if not data.mutants or not points:
        return head + "<p class=muted>No evaluations of top cells yet.</p>"
    return (head + "<p class=muted>Every finished evaluation of the top cells: the task's metric (higher is better; "
            "diverged runs score 0, drawn as ×) against each hyper-parameter. One colour per cell.</p>"
            + plots.hparams(points, data.tasks))


def _facts(data: D.ReportData) -> str:
    facts = D.run_facts(data)
    cfg = data.config
    rate = f"{facts.per_minute:.2f}" if facts.per_minute is not None else "–"
    span = f"{facts.span_minutes:.1f}" if facts.span_minutes is not None else "–"
    summary = table(None, [
        ["strategy", esc(data.strategy)],
        ["seeds", esc(", ".join(cfg.get("seeds", [])))],
        ["random seed", esc(data.search.seed if data.search else "–")],
        ["evaluations by status", esc(_counts(facts.status_counts))],
        ["evaluations by purpose", esc(_counts(facts.purposes))],
        ["architectures by stage", esc(_counts(facts.stages))],
        ["evaluations per minute", f"{rate} <span class=muted>(over {span} min since the start)</span>"],
        ["workers", esc(_counts(facts.workers)) or "–"],
        ["driver counters", esc(_counts(data.counters)) or "–"],
    ], left=2)
    failures = _failures(facts.failures)
    config = f"<details><summary>search configuration</summary><pre>{esc(json.dumps(cfg, indent=2, sort_keys=True))}</pre></details>"
    return f'<h2 id="facts">Run facts</h2>{summary}{config}<h3>Failures ({len(facts.failures)})</h3>{failures}'


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _failures(failures: list) -> str:
    """Failures grouped by their last error line (the exception), then each one, folded."""
    if not failures:
        return "<p class=muted>No evaluation failed.</p>"
    groups: dict[str, list] = {}
    for ev, name in failures:
        groups.setdefault(_error_line(ev.error), []).append((ev, name))
    summary = table(["count", "error", "tasks", "workers"], [
        [str(len(items)), f"<code>{esc(line[:200])}</code>", esc(", ".join(sorted({e.task for e, _ in items}))),
         esc(", ".join(sorted({e.worker or "?" for e, _ in items})))]
        for line, items in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    ], left={1, 2, 3})
    rows = [[str(ev.id), esc(name), esc(ev.task), esc(ev.worker or "–"),
             f"<details><summary>{esc(_error_line(ev.error)[:160])}</summary><pre>{esc(ev.error or '')}</pre></details>"]
            for ev, name in failures[:200]]
    more = f"<p class=muted>… and {len(failures) - 200} more</p>" if len(failures) > 200 else ""
    each = table(["eval", "cell", "task", "worker", "error"], rows, left=5)
    return f"{summary}<details><summary>every failure</summary>{each}{more}</details>"


def _error_line(error: str | None) -> str:
    """The last non-empty line of an error (the exception of a traceback)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"
