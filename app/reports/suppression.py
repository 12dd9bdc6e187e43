"""k-anonymity for aggregate reports: no published number lets anyone learn about fewer
than ``k`` people, directly or by subtracting from a total.

A report is made of **lines** (a week, say), each a set of **cells** that partition the
line's events (referrals, decisions) and, optionally, the line's **total**. Every cell
knows how many events it counts (what is published) and which people they concern (never
published). The rules:

1. **Primary suppression.** A cell concerning 1 to k-1 people is suppressed. A zero is
   shown: it concerns nobody.
2. **Totals are cells.** A total concerning fewer than k people is suppressed.
3. **Complementary suppression.** Where a total is shown, the suppressed cells of its line
   could be recovered by subtracting the shown cells from it. So, when a line has any
   suppressed cell, more cells are suppressed (the smallest first) until the suppressed
   cells together (a) are at least two, (b) concern at least k people, and (c) count more
   events than there are suppressed cells, so that no suppressed cell is pinned to a single
   value by the total (each is known to be at least 1, since zeros are shown). If no
   choice of cells achieves that, the total is withheld instead.

Lines are independent: no column or grand total is ever published beside them (it would
tie the lines together, and a suppressed cell could then be recovered across lines). The
property test in tests/reports/test_suppression.py holds these rules over generated data.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class Cell:
    """What a cell counts (published) and whom it concerns (never published)."""

    count: int = 0
    people: set[Hashable] = field(default_factory=set)

    def add(self, person: Hashable, events: int = 1) -> None:
        self.count += events
        self.people.add(person)


@dataclass(frozen=True)
class Line(Generic[K]):
    """A line as published: each cell's count, or None where suppressed."""

    cells: dict[K, int | None]
    total: int | None
    suppressed: frozenset[K]

    @property
    def total_suppressed(self) -> bool:
        return self.total is None


def _primary(cells: Mapping[K, Cell], k: int) -> set[K]:
    return {key for key, cell in cells.items() if 0 < len(cell.people) < k}


def _protected(cells: Mapping[K, Cell], hidden: set[K], k: int) -> bool:
    """Whether the hidden cells cannot be recovered from the line's total (rule 3)."""
    if not hidden:
        return True
    people: set[Hashable] = set()
    for key in hidden:
        people |= cells[key].people
    events = sum(cells[key].count for key in hidden)
    return len(hidden) >= 2 and len(people) >= k and events > len(hidden)


def suppress_line(cells: Mapping[K, Cell], k: int, *, with_total: bool = True) -> Line[K]:
    """Publish one line under the rules above; ``with_total`` publishes its total too."""
    hidden = _primary(cells, k)
    everyone: set[Hashable] = set()
    for cell in cells.values():
        everyone |= cell.people
    show_total = with_total and len(everyone) >= k
    if show_total and not _protected(cells, hidden, k):
        # The smallest cells first (the least information withheld), then by key order of
        # insertion, so the same data always gives the same line.
        order = sorted(
            (key for key, cell in cells.items() if key not in hidden and cell.count > 0),
            key=lambda key: (cells[key].count, list(cells).index(key)),
        )
        for key in order:
            hidden.add(key)
            if _protected(cells, hidden, k):
                break
        else:
            show_total = False
    return Line(
        cells={key: (None if key in hidden else cell.count) for key, cell in cells.items()},
        total=sum(cell.count for cell in cells.values()) if show_total else None,
        suppressed=frozenset(hidden),
    )


def suppress_values(people: Iterable[tuple[K, int]], k: int) -> set[K]:
    """The keys of standalone figures (no total beside them) to suppress: those
    concerning 1 to k-1 people."""
    return {key for key, count in people if 0 < count < k}
