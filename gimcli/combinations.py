"""The combination rule: which perturbation names are combinations, their components, and one
canonical spelling (README, "Combinations").

A name is split at the separator (`--combination-sep`, default '+') into its components, unless
the separator is 'none' (every name is one perturbation) or the name is *atomic*: a name of the
--drug-features CSV (training's or predict's), which is one perturbation whatever characters it
holds (`(+)-JQ1`), also inside a combination (`(+)-JQ1+Imatinib` is two: the longest atomic name
wins). Components are ordered canonically (sorted), so that `B+A` and `A+B` are one
combination in train, predict, explain and evaluate alike; a per-component dose `a+b` is
reordered with them. Dose parts are always separated by '+' (doses are numbers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_SEP = "+"
NO_SEP = "none"
DOSE_SEP = "+"


@dataclass(frozen=True)
class Combinations:
    sep: str = DEFAULT_SEP  # NO_SEP: names are never split
    atomic: frozenset[str] = field(default_factory=frozenset)

    def with_atomic(self, names: Iterable[str]) -> Combinations:
        names = frozenset(str(n).strip() for n in names)
        return self if names <= self.atomic else Combinations(self.sep, self.atomic | names)

    def split(self, condition) -> list[str]:
        """The components of a condition, in the order written."""
        s = str(condition).strip()
        if self.sep == NO_SEP or s in self.atomic:
            return [s] if s else []
        parts = [c.strip() for c in s.split(self.sep)]
        if not any(self.sep in a for a in self.atomic):
            return [c for c in parts if c]
        out, i = [], 0
        while i < len(parts):  # the longest run of parts that is an atomic name is one component
            j = next(
                (
                    j
                    for j in range(len(parts), i + 1, -1)
                    if self.sep.join(parts[i:j]) in self.atomic
                ),
                i + 1,
            )
            out.append(self.sep.join(parts[i:j]).strip())
            i = j
        return [c for c in out if c]

    def is_combination(self, condition) -> bool:
        return len(self.split(condition)) > 1

    def canonical(self, condition, dose=None):
        """(condition, dose) with the components sorted (and a per-component dose 'a+b' in the
        same order); single perturbations and controls unchanged."""
        comps = self.split(condition)
        if len(comps) < 2:
            return str(condition).strip(), dose
        order = sorted(range(len(comps)), key=lambda i: comps[i])
        cond = self.sep.join(comps[i] for i in order)
        if dose is not None:
            parts = str(dose).split(DOSE_SEP)
            if len(parts) == len(comps):
                dose = DOSE_SEP.join(parts[i].strip() for i in order)
        return cond, dose

    def canonical_names(self, names: Iterable[str]) -> list[str]:
        return [self.canonical(n)[0] for n in names]


DEFAULT = Combinations()
