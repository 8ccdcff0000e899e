"""The cell graph: a small DAG IR over named nodes (after ``torch.fx.Graph``).

A cell reads ``x`` (the input at t) and its M states at t-1, and gives M new
states. ``outputs[k]`` is the node holding the new value of state ``k``;
state 0 is the hidden output ``h`` fed to the next layer or the softmax.
networkx is an implementation detail: use the methods, never the raw graph.
"""

from __future__ import annotations

import hashlib
import json
import keyword
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import networkx as nx

from archsearch.errors import InvalidGraphError
from archsearch.ir._ops import (
    ATTR_DEFAULTS,
    BINARY,
    COMMUTATIVE,
    INPUTS,
    OPS,
    SCALAR,
    VECTOR,
    WIDTHS,
    Op,
    default_attrs,
)

JSON_FORMAT = "archsearch.cell/1"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = frozenset({"self", "torch", "F", "hard_sigmoid", "step_st", "xp", "state", "out"})


@dataclass
class Node:
    """One operation. ``inputs`` are node names in argument order."""

    name: str
    op: Op
    inputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # scratch space for passes; never hashed

    def attr(self, key: str) -> Any:
        return self.attrs.get(key, ATTR_DEFAULTS.get(self.op, {}).get(key))

    def label(self) -> str:
        """Canonical text of op and attributes (for hashing and printing)."""
        merged = {**default_attrs(self.op), **self.attrs}
        return self.op.value + (json.dumps(merged, sort_keys=True) if merged else "")

    def __str__(self) -> str:
        args = ", ".join(self.inputs)
        extra = "" if not self.attrs else " " + json.dumps(self.attrs, sort_keys=True)
        return f"{self.name} = {self.op.value}({args}){extra}"


@dataclass(frozen=True)
class StateSpec:
    name: str
    width: str = VECTOR


class Cell:
    """A recurrent cell as a computation graph.

    Args:
        name: a label for people (not part of the structural hash).
        states: the states in order; ``states[0]`` is the output ``h``.
        depth: layers this one graph already contains (GF-RNN, HM-LSTM);
            1 means the model may stack it ``layers`` times.
    """

    def __init__(self, name: str, states: Iterable[StateSpec], depth: int = 1, doc: str = ""):
        self.name = name
        self.states: tuple[StateSpec, ...] = tuple(states)
        self.depth = depth
        self.doc = doc
        self._nodes: dict[str, Node] = {}
        self.outputs: tuple[str, ...] = ()
        self.add_node("x", Op.INPUT)
        for k, spec in enumerate(self.states):
            self.add_node(spec.name, Op.STATE, attrs={"index": k, "width": spec.width})

    # ------------------------------------------------------------------ editing
    def add_node(
        self, name: str, op: Op, inputs: Iterable[str] = (), attrs: dict[str, Any] | None = None
    ) -> Node:
        """Add a node; ``name`` must be new (see :meth:`fresh_name`)."""
        if name in self._nodes:
            raise InvalidGraphError(f"node {name!r} already exists in cell {self.name!r}")
        node = Node(name, Op(op), tuple(inputs), dict(attrs or {}))
        self._nodes[name] = node
        return node

    def fresh_name(self, hint: str) -> str:
        """A deterministic unused identifier based on ``hint``."""
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"
        if base[0].isdigit():
            base = "v_" + base
        if keyword.iskeyword(base) or base in _RESERVED:
            base += "_"
        if base not in self._nodes:
            return base
        i = 1
        while f"{base}_{i}" in self._nodes:
            i += 1
        return f"{base}_{i}"

    def remove_node(self, name: str) -> None:
        del self._nodes[name]

    def replace_uses(self, old: str, new: str) -> None:
        """Make every consumer of ``old`` (and every output) read ``new`` instead."""
        for node in self._nodes.values():
            if old in node.inputs:
                node.inputs = tuple(new if i == old else i for i in node.inputs)
        self.outputs = tuple(new if o == old else o for o in self.outputs)

    def prune(self) -> None:
        """Remove non-input nodes that no output depends on."""
        live = self.live_nodes()
        for name in [n for n, nd in self._nodes.items() if n not in live and nd.op not in INPUTS]:
            del self._nodes[name]

    def copy(self) -> "Cell":
        return Cell.from_dict(self.to_dict(canonical=False))

    # ------------------------------------------------------------------ queries
    def __getitem__(self, name: str) -> Node:
        return self._nodes[name]

    def __contains__(self, name: str) -> bool:
        return name in self._nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def num_states(self) -> int:
        return len(self.states)

    def state_nodes(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.op is Op.STATE]

    def users(self, name: str) -> list[str]:
        return [n.name for n in self._nodes.values() if name in n.inputs]

    def nx_graph(self) -> nx.DiGraph:
        """A fresh networkx view: edge (src, dst, pos=argument index)."""
        g = nx.DiGraph()
        for node in self._nodes.values():
            g.add_node(node.name)
        for node in self._nodes.values():
            for pos, src in enumerate(node.inputs):
                if src in self._nodes:
                    g.add_edge(src, node.name, pos=pos)
        return g

    def ancestors(self, name: str) -> set[str]:
        return nx.ancestors(self.nx_graph(), name)

    def topological_order(self) -> list[str]:
        """Deterministic topological order (ties broken by insertion order)."""
        order_key = {n: i for i, n in enumerate(self._nodes)}
        return list(nx.lexicographical_topological_sort(self.nx_graph(), key=order_key.__getitem__))

    def live_nodes(self) -> set[str]:
        g = self.nx_graph()
        live: set[str] = set()
        for out in self.outputs:
            if out in self._nodes:
                live.add(out)
                live |= nx.ancestors(g, out)
        return live

    def widths(self) -> dict[str, str]:
        """Width of every node; assumes a valid graph."""
        w: dict[str, str] = {}
        for name in self.topological_order():
            w[name] = _node_width(self._nodes[name], w)
        return w

    def linears(self) -> list[Node]:
        return [n for n in self._nodes.values() if n.op is Op.LINEAR]

    def uses_raw_x(self) -> bool:
        """True if ``x`` feeds something other than a linear (so input_size must equal n)."""
        return any(
            "x" in n.inputs and n.op is not Op.LINEAR for n in self._nodes.values()
        ) or "x" in self.outputs

    # --------------------------------------------------------------- validation
    def validate(self) -> "Cell":
        """Check every IR rule; raise :class:`InvalidGraphError` naming the node. Returns self."""
        self._check_nodes()
        self._check_acyclic()
        widths = self._check_widths()
        self._check_outputs(widths)
        self._check_connected()
        return self

    def _fail(self, msg: str, node: Node | None = None) -> None:
        where = f"node {node.name!r} ({node.op.value}): " if node is not None else ""
        raise InvalidGraphError(f"cell {self.name!r}: {where}{msg}\n{self.dump()}")

    def _check_nodes(self) -> None:
        if "x" not in self._nodes or self._nodes["x"].op is not Op.INPUT:
            self._fail("the input node 'x' is missing")
        if not self.states:
            self._fail("a cell needs at least one state")
        seen_idx: set[int] = set()
        for node in self._nodes.values():
            if not _IDENT.match(node.name) or keyword.iskeyword(node.name) or node.name in _RESERVED:
                self._fail("name is not a valid, unreserved identifier", node)
            if node.op is Op.INPUT and node.name != "x":
                self._fail("only 'x' may be the input node", node)
            if len(node.inputs) != OPS[node.op].arity:
                self._fail(f"expects {OPS[node.op].arity} input(s), has {len(node.inputs)}", node)
            for src in node.inputs:
                if src not in self._nodes:
                    self._fail(f"reads unknown node {src!r}", node)
            unknown = set(node.attrs) - set(ATTR_DEFAULTS.get(node.op, {}))
            if unknown:
                self._fail(f"unknown attribute(s) {sorted(unknown)}", node)
            self._check_attrs(node)
            if node.op is Op.STATE:
                idx = node.attr("index")
                if not (0 <= idx < len(self.states)) or idx in seen_idx:
                    self._fail(f"state index {idx} is out of range or repeated", node)
                if self.states[idx].name != node.name or self.states[idx].width != node.attr("width"):
                    self._fail(f"does not match declared state {self.states[idx]}", node)
                seen_idx.add(idx)
        if len(seen_idx) != len(self.states):
            self._fail(f"{len(self.states)} states declared but {len(seen_idx)} state nodes present")

    def _check_attrs(self, node: Node) -> None:
        if node.op in (Op.LINEAR, Op.STATE) and node.attr("width") not in WIDTHS:
            self._fail(f"width must be one of {WIDTHS}, got {node.attr('width')!r}", node)
        if node.op is Op.LINEAR:
            for key in ("diag", "bias_init"):
                if not isinstance(node.attr(key), (int, float)) or isinstance(node.attr(key), bool):
                    self._fail(f"{key} must be a number", node)
            if not isinstance(node.attr("bias"), bool):
                self._fail("bias must be true or false", node)
        if node.op is Op.HARD_SIGMOID:
            slope = node.attr("slope")
            if slope is not None and (not isinstance(slope, (int, float)) or slope <= 0):
                self._fail("slope must be a positive number or null (annealed)", node)

    def _check_acyclic(self) -> None:
        g = self.nx_graph()
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            self._fail(f"cycle through {' -> '.join(e[0] for e in cycle)}", self._nodes[cycle[0][0]])

    def _check_widths(self) -> dict[str, str]:
        w: dict[str, str] = {}
        for name in self.topological_order():
            node = self._nodes[name]
            if node.op is Op.LINEAR and w[node.inputs[0]] != VECTOR:
                self._fail(f"a linear map needs a vector input, {node.inputs[0]!r} is a scalar", node)
            w[name] = _node_width(node, w)
        return w

    def _check_outputs(self, widths: dict[str, str]) -> None:
        if len(self.outputs) != len(self.states):
            self._fail(f"{len(self.outputs)} outputs for {len(self.states)} states")
        for k, out in enumerate(self.outputs):
            if out not in self._nodes:
                self._fail(f"output {k} names unknown node {out!r}")
            if widths[out] != self.states[k].width:
                self._fail(
                    f"output for state {self.states[k].name!r} has width {widths[out]}, "
                    f"the state has width {self.states[k].width}",
                    self._nodes[out],
                )

    def _check_connected(self) -> None:
        g = self.nx_graph()
        live = self.live_nodes()
        for node in self._nodes.values():
            if node.op not in INPUTS and node.name not in live:
                self._fail("dangling: no output depends on it", node)
        if "x" not in live:
            self._fail("the outputs do not depend on the input x")
        inputs = {n.name for n in self._nodes.values() if n.op in INPUTS}
        for k, out in enumerate(self.outputs):
            if out not in inputs and not (nx.ancestors(g, out) & inputs):
                self._fail(f"output {k} is a constant (reads no input)", self._nodes[out])

    # -------------------------------------------------------------- identity
    def structural_hash(self) -> str:
        """Hash invariant to node renaming and to argument order of add/mul."""
        g = nx.DiGraph()
        out_marks: dict[str, list[str]] = {}
        for k, out in enumerate(self.outputs):
            out_marks.setdefault(out, []).append(f"out{k}")
        for node in self._nodes.values():
            label = node.label()
            if node.op is Op.STATE:
                label = f"state{node.attr('index')}:{node.attr('width')}"
            g.add_node(node.name, label=label + "|" + ",".join(out_marks.get(node.name, [])))
        for node in self._nodes.values():
            for pos, src in enumerate(node.inputs):
                g.add_edge(src, node.name, pos="0" if node.op in COMMUTATIVE else str(pos))
        with warnings.catch_warnings():  # networkx 3.5 notes that directed hashes changed
            warnings.simplefilter("ignore", UserWarning)
            wl = nx.weisfeiler_lehman_graph_hash(
                g, node_attr="label", edge_attr="pos", iterations=max(3, _wl_rounds(g) + 1), digest_size=16
            )
        return hashlib.sha256(f"{wl}|depth={self.depth}".encode()).hexdigest()[:32]

    # --------------------------------------------------------------- (de)serialization
    def to_dict(self, canonical: bool = True) -> dict[str, Any]:
        order = self.topological_order() if canonical else list(self._nodes)
        nodes = []
        for name in order:
            node = self._nodes[name]
            if node.op in INPUTS:
                continue
            entry: dict[str, Any] = {"name": node.name, "op": node.op.value, "inputs": list(node.inputs)}
            if node.attrs:
                entry["attrs"] = dict(sorted(node.attrs.items()))
            nodes.append(entry)
        return {
            "format": JSON_FORMAT,
            "name": self.name,
            "doc": self.doc,
            "depth": self.depth,
            "states": [{"name": s.name, "width": s.width} for s in self.states],
            "nodes": nodes,
            "outputs": list(self.outputs),
        }

    def to_json(self, indent: int | None = None) -> str:
        """Canonical JSON: same graph, same text, on every run."""
        seps = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=seps, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Cell":
        try:
            if data.get("format", JSON_FORMAT) != JSON_FORMAT:
                raise InvalidGraphError(f"unsupported cell format {data.get('format')!r}")
            cell = cls(
                data.get("name", "cell"),
                [StateSpec(s["name"], str(s.get("width", VECTOR))) for s in data["states"]],
                depth=int(data.get("depth", 1)),
                doc=data.get("doc", ""),
            )
            for entry in data["nodes"]:
                cell.add_node(entry["name"], Op(entry["op"]), entry.get("inputs", ()), entry.get("attrs"))
            cell.outputs = tuple(data["outputs"])
        except InvalidGraphError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidGraphError(f"malformed cell JSON: {type(e).__name__}: {e}") from e
        return cell

    @classmethod
    def from_json(cls, text: str) -> "Cell":
        """Parse and validate a cell from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidGraphError(f"not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise InvalidGraphError("cell JSON must be an object")
        return cls.from_dict(data).validate()

    # ------------------------------------------------------------------ printing
    def dump(self) -> str:
        """One line per node, then the outputs."""
        lines = [f"cell {self.name} (states: {', '.join(s.name for s in self.states)}; depth {self.depth})"]
        lines += [f"  {node}" for node in self._nodes.values() if node.op not in INPUTS]
        lines.append("  outputs: " + ", ".join(f"{s.name}'={o}" for s, o in zip(self.states, self.outputs)))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.dump()

    def __repr__(self) -> str:
        return f"Cell({self.name!r}, nodes={len(self)}, states={[s.name for s in self.states]})"

    def equations(self) -> str:
        """The cell's equations in the paper's notation."""
        from archsearch.ir._printer import equations

        return equations(self)


def _wl_rounds(g: nx.DiGraph) -> int:
    """Rounds of colour refinement (labels, both edge directions, edge ``pos``) until the partition is stable.

    Weisfeiler-Lehman labels carry no new information after that, so hashing
    more rounds only costs time (``len(g)`` rounds took 0.7 s on the 184-node HM-LSTM).
    """
    colors: dict[str, int] = {v: hash(d["label"]) for v, d in g.nodes(data=True)}
    classes = len(set(colors.values()))
    for rounds in range(1, len(g) + 1):
        colors = {
            v: hash((
                colors[v],
                tuple(sorted((d["pos"], colors[s]) for s, d in g.succ[v].items())),
                tuple(sorted((d["pos"], colors[p]) for p, d in g.pred[v].items())),
            ))
            for v in g
        }
        if len(set(colors.values())) == classes:
            return rounds
        classes = len(set(colors.values()))
    return len(g)


def _node_width(node: Node, widths: dict[str, str]) -> str:
    if node.op is Op.INPUT:
        return VECTOR
    if node.op in (Op.STATE, Op.LINEAR):
        return node.attr("width")
    if node.op is Op.ONE:
        return SCALAR
    if node.op in BINARY:
        return VECTOR if VECTOR in (widths[node.inputs[0]], widths[node.inputs[1]]) else SCALAR
    return widths[node.inputs[0]]
