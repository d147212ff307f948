"""Kubernetes label selectors (metav1.LabelSelector), pure.

`Selector.parse` validates a selector as the apiserver would and names the bad
value; `matches` follows metav1 semantics: every matchLabels pair and every
matchExpressions requirement must hold; an empty selector matches everything.
`key` is a canonical text of the selector, equal for selectors that mean the
same (order of labels, expressions and values does not matter), so peers with
the same selector can share one address set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A label selector the API would not accept."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, what: str = "selector") -> Selector:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise SelectorError(f"{what}: expected an object, got {raw!r}")
        reqs: list[Requirement] = []
        labels = raw.get("matchLabels") or {}
        if not isinstance(labels, Mapping):
            raise SelectorError(f"{what}.matchLabels: expected a map, got {labels!r}")
        for k, v in labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SelectorError(f"{what}.matchLabels: bad pair {k!r}: {v!r}")
            reqs.append(Requirement(k, "In", (v,)))
        for i, e in enumerate(raw.get("matchExpressions") or []):
            where = f"{what}.matchExpressions[{i}]"
            if not isinstance(e, Mapping):
                raise SelectorError(f"{where}: expected an object, got {e!r}")
            op, key = e.get("operator"), e.get("key")
            values = e.get("values") or []
            if op not in OPERATORS:
                raise SelectorError(
                    f"{where}.operator: {op!r} is not one of {', '.join(OPERATORS)}")
            if not isinstance(key, str) or not key:
                raise SelectorError(f"{where}.key: expected a label key, got {key!r}")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise SelectorError(f"{where}.values: expected a list of strings, got {values!r}")
            if op in ("In", "NotIn") and not values:
                raise SelectorError(f"{where}: operator {op} needs values")
            if op in ("Exists", "DoesNotExist") and values:
                raise SelectorError(f"{where}: operator {op} takes no values, got {values!r}")
            reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
        return cls(tuple(sorted(set(reqs), key=lambda r: (r.key, r.operator, r.values))))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def key(self) -> str:
        """Canonical text, e.g. `app In (web),tier Exists`; `` for everything."""
        return ",".join(f"{r.key} {r.operator}" + (f" ({','.join(r.values)})" if r.values else "")
                        for r in self.requirements)
