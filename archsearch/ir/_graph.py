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
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import networkx as nx

from archsearch.errors import InvalidGraphError
from archsearch.ir import limits
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
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # always used with fullmatch
_NUMBER_ATTRS = {"diag": limits.DIAG_RANGE, "bias_init": limits.BIAS_INIT_RANGE}
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
        base = base[: limits.MAX_NAME_LENGTH - 8]  # room for "_" + a counter
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
        self._check_header()
        self._check_nodes()
        self._check_acyclic()
        widths = self._check_widths()
        self._check_outputs(widths)
        self._check_connected()
        return self

    def _fail(self, msg: str, node: Node | None = None) -> None:
        where = f"node {node.name!r} ({node.op.value}): " if node is not None else ""
        raise InvalidGraphError(f"cell {self.name!r}: {where}{msg}\n{self.dump()}")

    def _check_header(self) -> None:
        """Name, doc, depth and sizes: checked first, so a huge cell is refused before any graph work."""
        if not isinstance(self.name, str) or not self.name:  # any text: code generation escapes it
            raise InvalidGraphError(f"cell name {str(self.name)[:40]!r} must be non-empty text")
        if len(self.name) > limits.MAX_CELL_NAME_LENGTH:
            raise InvalidGraphError(f"cell name is {len(self.name)} characters, the limit is {limits.MAX_CELL_NAME_LENGTH}")
        if not isinstance(self.doc, str) or len(self.doc) > limits.MAX_DOC_LENGTH:
            raise InvalidGraphError(f"cell {self.name!r}: doc must be text of at most {limits.MAX_DOC_LENGTH} characters")
        if not _is_int(self.depth) or not 1 <= self.depth <= limits.MAX_DEPTH:
            raise InvalidGraphError(f"cell {self.name!r}: depth must be an integer from 1 to {limits.MAX_DEPTH}, "
                                    f"got {self.depth!r}")
        if len(self.states) > limits.MAX_STATES:
            raise InvalidGraphError(f"cell {self.name!r}: {len(self.states)} states, the limit is {limits.MAX_STATES}")
        if len(self._nodes) > limits.MAX_NODES:
            raise InvalidGraphError(f"cell {self.name!r}: {len(self._nodes)} nodes, the limit is {limits.MAX_NODES}")

    def _check_nodes(self) -> None:
        if "x" not in self._nodes or self._nodes["x"].op is not Op.INPUT:
            self._fail("the input node 'x' is missing")
        if not self.states:
            self._fail("a cell needs at least one state")
        seen_idx: set[int] = set()
        for node in self._nodes.values():
            if (not isinstance(node.name, str) or len(node.name) > limits.MAX_NAME_LENGTH
                    or not _IDENT.fullmatch(node.name) or keyword.iskeyword(node.name) or node.name in _RESERVED):
                raise InvalidGraphError(f"cell {self.name!r}: node name {str(node.name)[:80]!r} is not a valid, "
                                        f"unreserved identifier of at most {limits.MAX_NAME_LENGTH} characters")
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
                if not _is_int(idx) or not (0 <= idx < len(self.states)) or idx in seen_idx:
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
            for key, (low, high) in _NUMBER_ATTRS.items():
                if not _is_number(node.attr(key)) or not low <= node.attr(key) <= high:
                    self._fail(f"{key} must be a finite number in [{low:g}, {high:g}], got {node.attr(key)!r}", node)
            if not isinstance(node.attr("bias"), bool):
                self._fail("bias must be true or false", node)
        if node.op is Op.HARD_SIGMOID:
            slope, (low, high) = node.attr("slope"), limits.SLOPE_RANGE
            if slope is not None and (not _is_number(slope) or not low < slope <= high):
                self._fail(f"slope must be a number in ({low:g}, {high:g}] or null (annealed), got {slope!r}", node)

    def _check_acyclic(self) -> None:
        g = self.nx_graph()
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            self._fail(f"cycle through {' -> '.join(e[0] for e in cycle)}", self._nodes[cycle[0][0]])
        longest = nx.dag_longest_path_length(g)
        if longest > limits.MAX_PATH:
            self._fail(f"the longest path has {longest} ops, the limit is {limits.MAX_PATH}")

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
        """Build a cell from :meth:`to_dict`'s layout (types checked here; call :meth:`validate` for the rules)."""
        try:
            _check_layout(data)
            cell = cls(
                data.get("name", "cell"),
                [StateSpec(s["name"], s.get("width", VECTOR)) for s in data["states"]],
                depth=data.get("depth", 1),
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
        """Parse and validate a cell from JSON text (size, nesting and every rule checked)."""
        if len(text) > limits.MAX_JSON_CHARS:
            raise InvalidGraphError(f"cell JSON is {len(text)} characters, the limit is {limits.MAX_JSON_CHARS}")
        too_deep = f"cell JSON is nested more than {limits.MAX_JSON_NESTING} levels deep"
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError as e:  # json's C parser stops at Python's recursion limit
            raise InvalidGraphError(too_deep) from e
        except ValueError as e:  # JSONDecodeError, NaN/Infinity, integers too long to convert
            raise InvalidGraphError(f"not valid JSON: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        if _nesting(data) > limits.MAX_JSON_NESTING:
            raise InvalidGraphError(too_deep)
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (booleans are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number archsearch accepts")


def _nesting(data: Any) -> int:
    """How deeply lists and dicts nest in parsed JSON (iterative: no recursion limit)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _check_layout(data: Any) -> None:
    """The JSON types of a cell dict: an object with lists of objects of strings (values checked by validate)."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise InvalidGraphError(f"malformed cell JSON: {what}")

    need(isinstance(data, dict), "a cell must be an object")
    need(data.get("format", JSON_FORMAT) == JSON_FORMAT, f"unsupported cell format {str(data.get('format'))[:40]!r}")
    for key in ("states", "nodes", "outputs"):
        need(isinstance(data.get(key), list), f"{key!r} must be a list")
    need(len(data["nodes"]) <= limits.MAX_NODES, f"{len(data['nodes'])} nodes, the limit is {limits.MAX_NODES}")
    need(len(data["states"]) <= limits.MAX_STATES, f"{len(data['states'])} states, the limit is {limits.MAX_STATES}")
    for key in ("name", "doc"):
        need(isinstance(data.get(key, ""), str), f"{key!r} must be a string")
    for s in data["states"]:
        need(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("width", VECTOR), str),
             "each state must be an object with a string 'name' and 'width'")
    for entry in data["nodes"]:
        need(isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("op"), str),
             "each node must be an object with a string 'name' and 'op'")
        inputs = entry.get("inputs", [])
        need(isinstance(inputs, list) and all(isinstance(i, str) for i in inputs),
             f"node {entry['name'][:40]!r}: 'inputs' must be a list of node names")
        attrs = entry.get("attrs", {})
        need(attrs is None or isinstance(attrs, dict) and all(
            v is None or isinstance(v, (str, int, float, bool)) for v in attrs.values()),
             f"node {entry['name'][:40]!r}: 'attrs' must be an object of numbers, strings and booleans")
    need(all(isinstance(o, str) for o in data["outputs"]), "'outputs' must be a list of node names")


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
