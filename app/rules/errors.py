"""The one error a rule file can raise at load time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleProblem:
    """One problem in a rule file: where it is and what is wrong."""

    file: str
    message: str
    rule_id: str | None = None
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.rule_id is not None:
            parts.append(f"rule {self.rule_id!r}")
        if self.path:
            parts.append(self.path)
        return f"{', '.join(parts)}: {self.message}"


class RuleFileError(Exception):
    """A rule file that cannot be used. It lists every problem found, never a partial set."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
