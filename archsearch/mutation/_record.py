"""What a mutation did: the transforms applied, where, and how many children were rejected.

Records are plain JSON (``to_dict`` / ``from_dict``) so storage can keep them
next to the child's graph and lineage can be shown later.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from archsearch.mutation._transforms import TRANSFORM_NAMES

RECORD_FORMAT = "archsearch.mutation/1"


@dataclass
class AppliedTransform:
    """One transform: its number in the paper (1..6), the anchor node, and details."""

    kind: int
    anchor: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return TRANSFORM_NAMES[self.kind]

    def describe(self) -> str:
        """One human-readable line, e.g. ``(3) insert relu between f and f_add``."""
        d, a = self.detail, self.anchor
        text = {
            1: lambda: f"replace {d['from']} with {d['to']} at {a}",
            2: lambda: f"replace {d['from']} with {d['to']} at {a}",
            3: lambda: f"insert {d['activation']} between {d['parent']} and {a} (new node {d['new']})",
            4: lambda: f"remove {a} ({d['op']}); its user reads {d['input']}",
            5: lambda: f"replace {a} with its ancestor {d['ancestor']}" + _pruned(d),
            6: lambda: f"replace {a} with {d['op']}({d['left']}, {d['right']}) (A = {d['other']}, new node {d['new']})"
            + _pruned(d),
        }[self.kind]()
        return f"({self.kind}) {text}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "anchor": self.anchor, "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AppliedTransform":
        return cls(int(data["kind"]), str(data["anchor"]), dict(data.get("detail", {})))


def _pruned(detail: dict[str, Any]) -> str:
    n = detail.get("pruned", 0)
    return f"; {n} dead node{'s' if n != 1 else ''} pruned" if n else ""


@dataclass
class MutationRecord:
    """The story of one child.

    Attributes:
        p: the per-node probability of the accepted attempt (last draw).
        transforms: the transforms of the accepted attempt, in the order applied.
        attempts: children drawn, the accepted one included.
        rejection_reasons: rejected children by reason (``cycle``, ``input_disconnected``, ...).
        parent_hash / child_hash: structural hashes (lineage without storing ids here).
        seed: the integer seed passed to :func:`mutate`, if one was.
    """

    p: float
    transforms: list[AppliedTransform]
    attempts: int = 1
    rejection_reasons: dict[str, int] = field(default_factory=dict)
    parent_hash: str = ""
    child_hash: str = ""
    seed: int | None = None

    @property
    def rejections(self) -> int:
        return self.attempts - 1

    @property
    def rejection_rate(self) -> float:
        """Rejected children / children drawn for this mutation."""
        return self.rejections / self.attempts

    @property
    def kinds(self) -> list[int]:
        return [t.kind for t in self.transforms]

    def describe(self) -> str:
        """One line per transform."""
        return "\n".join(t.describe() for t in self.transforms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "p": self.p,
            "transforms": [t.to_dict() for t in self.transforms],
            "attempts": self.attempts,
            "rejections": self.rejections,
            "rejection_reasons": dict(sorted(self.rejection_reasons.items())),
            "parent_hash": self.parent_hash,
            "child_hash": self.child_hash,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MutationRecord":
        if data.get("format", RECORD_FORMAT) != RECORD_FORMAT:
            raise ValueError(f"unsupported mutation record format {data.get('format')!r}")
        return cls(
            p=float(data["p"]),
            transforms=[AppliedTransform.from_dict(t) for t in data["transforms"]],
            attempts=int(data.get("attempts", 1)),
            rejection_reasons={str(k): int(v) for k, v in data.get("rejection_reasons", {}).items()},
            parent_hash=str(data.get("parent_hash", "")),
            child_hash=str(data.get("child_hash", "")),
            seed=data.get("seed"),
        )


def chain_record(links: list[MutationRecord]) -> MutationRecord:
    """One record for a chain of mutations (each link's child the next one's parent): every transform in
    order, attempts and rejections summed, the first parent's and the last child's hashes, the last ``p``."""
    if len(links) == 1:
        return links[0]
    reasons: Counter[str] = Counter()
    for link in links:
        reasons.update(link.rejection_reasons)
    return MutationRecord(
        p=links[-1].p, transforms=[t for link in links for t in link.transforms],
        attempts=sum(link.attempts for link in links), rejection_reasons=dict(reasons),
        parent_hash=links[0].parent_hash, child_hash=links[-1].child_hash, seed=links[0].seed,
    )
