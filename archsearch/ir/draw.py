"""Pictures of cell graphs (matplotlib, headless).

The layout is layered left to right by topological depth: ``x`` and the states at
t-1 sit in the first column, the new states in the last one, and every other node
one column right of its deepest input. Within a column nodes are ordered by the
mean position of their inputs (a few barycentre sweeps), which keeps most edges
short. matplotlib is imported inside :func:`draw_cell`, so importing this module
(or :mod:`archsearch.ir`) stays light.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from archsearch.ir._ops import INPUTS, Op

if TYPE_CHECKING:
    from archsearch.ir._graph import Cell

# colours: inputs at t-1 on the left, new states on the right, the rest by kind of op
INPUT_COLOUR = "#9ecae1"  # x_t and states at t-1
OUTPUT_COLOUR = "#fdae6b"  # new states (markers in the last column)
OUTPUT_BORDER = "#e6550d"  # border of the node that computes a new state
LINEAR_COLOUR = "#e5e5e5"
ACTIVATION_COLOUR = "#c7e9c0"
BINARY_COLOUR = "#fff7bc"
CONSTANT_COLOUR = "#d9d9d9"
_COLUMN_GAP = 1.5  # inches between columns
_ROW_GAP = 0.55  # inches between rows
_SWEEPS = 4  # barycentre sweeps (forward and backward)


def draw_cell(cell: "Cell", path_or_buffer: str | Path | BinaryIO, fmt: str | None = None) -> None:
    """Draw ``cell`` as a layered graph to a file or a binary buffer.

    Args:
        cell: The cell to draw.
        path_or_buffer: A file name (``.png``, ``.svg``, ``.pdf``) or a writable binary buffer.
        fmt: The image format; taken from the file name when None (``png`` for buffers).
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: headless, no GUI backend, no global state

    if fmt is None:
        suffix = Path(path_or_buffer).suffix if isinstance(path_or_buffer, (str, Path)) else ""
        fmt = suffix.lstrip(".").lower() or "png"
    positions = layout(cell)
    columns = 1 + max(x for x, _ in positions.values())
    rows = 1 + max(y for _, y in positions.values())
    fig = Figure(figsize=(1.2 + columns * _COLUMN_GAP, 0.8 + rows * _ROW_GAP))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-0.8, columns - 0.2)
    ax.set_ylim(rows - 0.4, -0.9)
    ax.axis("off")
    _draw_edges(ax, cell, positions)
    _draw_nodes(ax, cell, positions)
    ax.text(-0.7, -0.65, f"{cell.name}: inputs and states at t-1 (left, blue) → new states (right, orange)",
            fontsize=9, color="#444444", va="center")
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "archsearch"}):
        fig.savefig(path_or_buffer, format=fmt, dpi=90)


def cell_svg(cell: "Cell") -> str:
    """The picture of ``cell`` as compact SVG text for embedding in HTML (see :func:`compact_svg`)."""
    buf = io.BytesIO()
    draw_cell(cell, buf, fmt="svg")
    return compact_svg(buf.getvalue().decode("utf-8"))


_ATTRIBUTE = re.compile(r'="([^"]*)"')
_LONG_FLOAT = re.compile(r"(-?\d+\.\d)\d+")


def compact_svg(text: str) -> str:
    """matplotlib SVG made about half as long: no prolog or metadata, numbers in attributes to 0.1 pt.

    Only attribute values are rounded (coordinates, path data), never text content,
    so tick labels and node names stay exact.
    """
    text = text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = _ATTRIBUTE.sub(lambda m: '="' + _LONG_FLOAT.sub(r"\1", " ".join(m.group(1).split())) + '"', text)
    return re.sub(r">\s+<", "><", text)


def layout(cell: "Cell") -> dict[str, tuple[int, int]]:
    """``(column, row)`` of every node, plus ``'@out<k>'`` markers for the new states.

    Sources sit in column 0, every node one column right of its deepest input, and
    the new-state markers in an extra last column (an output node may feed other
    nodes, e.g. ``c_t`` feeds ``h_t``, so it cannot always be drawn last itself).
    """
    order = cell.topological_order()
    column: dict[str, int] = {}
    for name in order:
        inputs = [i for i in cell[name].inputs if i in column]
        column[name] = 0 if not inputs else 1 + max(column[i] for i in inputs)
    last = 1 + max(column.values(), default=0)
    for k in range(len(cell.outputs)):
        column[output_marker(k)] = last
    layers: dict[int, list[str]] = {}
    for name in [*order, *(output_marker(k) for k in range(len(cell.outputs)))]:
        layers.setdefault(column[name], []).append(name)
    _order_layers(cell, layers)
    return {name: (c, r) for c, names in layers.items() for r, name in enumerate(names)}


def output_marker(k: int) -> str:
    """The layout key of the marker for new state ``k`` (not a valid node name, so no clash)."""
    return f"@out{k}"


def _inputs_of(cell: "Cell", name: str) -> tuple[str, ...]:
    if name.startswith("@out"):
        return (cell.outputs[int(name[4:])],)
    return cell[name].inputs


def _order_layers(cell: "Cell", layers: dict[int, list[str]]) -> None:
    """Barycentre ordering: each node moves towards the mean row of its neighbours."""
    users: dict[str, list[str]] = {}
    for names in layers.values():
        for name in names:
            for i in _inputs_of(cell, name):
                users.setdefault(i, []).append(name)
    # x first, then the states in their order, then constants: a stable inputs column
    rank = {n.name: (0 if n.op is Op.INPUT else 1 if n.op is Op.STATE else 2, i) for i, n in enumerate(cell)}
    layers.get(0, []).sort(key=rank.__getitem__)
    for sweep in range(_SWEEPS):
        forward = sweep % 2 == 0
        row = {n: r for names in layers.values() for r, n in enumerate(names)}
        for c in sorted(layers, reverse=not forward):
            if c == 0 or c == max(layers):
                continue  # inputs and new states keep the states' order
            neighbours = (lambda n: _inputs_of(cell, n)) if forward else (lambda n: users.get(n, []))
            layers[c].sort(key=lambda n: _barycentre(n, neighbours(n), row))
            row.update({n: r for r, n in enumerate(layers[c])})


def _barycentre(name: str, neighbours: tuple[str, ...] | list[str], row: dict[str, int]) -> float:
    rows = [row[n] for n in neighbours if n in row]
    return sum(rows) / len(rows) if rows else float(row.get(name, 0))


def _colour(cell: "Cell", name: str) -> str:
    if name.startswith("@out"):
        return OUTPUT_COLOUR
    op = cell[name].op
    if op in INPUTS:
        return INPUT_COLOUR
    if op is Op.ONE:
        return CONSTANT_COLOUR
    if op is Op.LINEAR:
        return LINEAR_COLOUR
    return BINARY_COLOUR if op in (Op.ADD, Op.MUL, Op.SUB) else ACTIVATION_COLOUR


def _label(cell: "Cell", name: str) -> str:
    if name.startswith("@out"):
        return f"{cell.states[int(name[4:])].name}_t"
    node = cell[name]
    if node.op is Op.INPUT:
        return "x_t"
    if node.op is Op.STATE:
        return f"{name}_(t-1)"
    return f"{node.op.value}\n{name}"


def _half_width(label: str) -> float:
    """Half the width of a node's box in column units (DejaVu Sans at 7 pt: ~0.6 em per character)."""
    chars = max(len(line) for line in label.splitlines())
    return (chars * 7 * 0.6 / 72 / 2 + 0.06) / _COLUMN_GAP


def _draw_nodes(ax, cell: "Cell", positions: dict[str, tuple[int, int]]) -> None:
    outputs = set(cell.outputs)
    for name, (c, r) in positions.items():
        marked = name in outputs  # the node that holds a new state: an orange border
        ax.text(c, r, _label(cell, name), ha="center", va="center", fontsize=7, family="DejaVu Sans",
                bbox={"boxstyle": "round,pad=0.3", "facecolor": _colour(cell, name),
                      "edgecolor": OUTPUT_BORDER if marked else "#555555", "linewidth": 1.6 if marked else 0.7},
                zorder=3)


def _draw_edges(ax, cell: "Cell", positions: dict[str, tuple[int, int]]) -> None:
    from matplotlib.patches import FancyArrowPatch

    for name, (x1, y1) in positions.items():
        for pos, src in enumerate(_inputs_of(cell, name)):
            if src not in positions:
                continue
            x0, y0 = positions[src]
            bend = 0.0 if x1 - x0 <= 1 else 0.08 * (1 if (x0 + pos) % 2 else -1)
            start = x0 + _half_width(_label(cell, src))
            end = x1 - _half_width(_label(cell, name)) - 0.02
            ax.add_patch(FancyArrowPatch(
                (start, y0), (end, y1), arrowstyle="-|>", mutation_scale=7, linewidth=0.6,
                color="#777777", connectionstyle=f"arc3,rad={bend}", zorder=1, shrinkA=0, shrinkB=0,
                clip_on=False,  # nothing leaves the axes; no clip-path keeps the SVG short
            ))
