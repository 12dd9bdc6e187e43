"""k-anonymity of report lines, held over generated data (Hypothesis): no shown figure is
about fewer than k people, and no suppressed cell can be recovered from the line's total."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.reports.suppression import Cell, suppress_line

PEOPLE = st.integers(min_value=0, max_value=40)
#: A line: for each of up to 8 cells, events as (person, how many events) pairs. The same
#: person may appear in several cells (several referrals of one person).
LINES = st.dictionaries(
    st.sampled_from("abcdefgh"),
    st.lists(st.tuples(PEOPLE, st.integers(min_value=1, max_value=3)), max_size=30),
    max_size=8,
)


def _cells(raw: dict[str, list[tuple[int, int]]]) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    for key, events in raw.items():
        cell = Cell()
        for person, count in events:
            cell.add(person, count)
        cells[key] = cell
    return cells


@settings(max_examples=400, deadline=None)
@given(raw=LINES, k=st.integers(min_value=2, max_value=15), with_total=st.booleans())
def test_no_figure_is_about_fewer_than_k_people(
    raw: dict[str, list[tuple[int, int]]], k: int, with_total: bool
) -> None:
    cells = _cells(raw)
    line = suppress_line(cells, k, with_total=with_total)
    everyone = set().union(*(c.people for c in cells.values())) if cells else set()
    for key, shown in line.cells.items():
        if shown is None:
            continue
        assert shown == cells[key].count  # shown figures are true, never perturbed
        assert shown == 0 or len(cells[key].people) >= k
    if line.total is not None:
        assert with_total
        assert len(everyone) >= k
        assert line.total == sum(c.count for c in cells.values())


@settings(max_examples=400, deadline=None)
@given(raw=LINES, k=st.integers(min_value=2, max_value=15))
def test_no_suppressed_cell_can_be_recovered_from_the_total(
    raw: dict[str, list[tuple[int, int]]], k: int
) -> None:
    cells = _cells(raw)
    line = suppress_line(cells, k)
    hidden = [key for key, shown in line.cells.items() if shown is None]
    if line.total is None or not hidden:
        return
    # What anyone can work out: the hidden cells add up to what the shown ones leave of the
    # total, and each is at least 1 (a zero would have been shown).
    left = line.total - sum(v for v in line.cells.values() if v is not None)
    for key in hidden:
        lowest, highest = 1, left - (len(hidden) - 1)
        assert lowest < highest, f"cell {key} is pinned to {lowest}"
        assert lowest <= cells[key].count <= highest
    # Together they are about at least k people: no small group can be singled out.
    people = set().union(*(cells[key].people for key in hidden))
    assert len(people) >= k


def test_a_single_small_cell_takes_a_partner_with_it() -> None:
    """One small cell beside big ones: the smallest other cell is suppressed too."""
    cells = {
        "small": Cell(3, {1, 2, 3}),
        "mid": Cell(12, set(range(10, 22))),
        "big": Cell(30, set(range(30, 60))),
    }
    line = suppress_line(cells, 11)
    assert line.cells == {"small": None, "mid": None, "big": 30}
    assert line.total == 45


def test_a_total_about_fewer_than_k_people_is_withheld() -> None:
    cells = {"a": Cell(4, {1, 2}), "b": Cell(5, {3, 4, 5})}
    line = suppress_line(cells, 11)
    assert line.total is None
    assert line.cells == {"a": None, "b": None}
