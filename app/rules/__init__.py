"""The declarative rules engine: rule files are data, validated at load and compiled once.

Public API::

    rule_set = load_rule_set(path)                   # raises RuleFileError
    decision = rule_set.evaluate(screening, trace=True)
    rule_set.version, rule_set.sha256
"""

from app.rules.engine import DEFAULT_RULES_PATH, RuleSet, load_rule_set, rule_set_from_text
from app.rules.errors import RuleFileError, RuleProblem

__all__ = [
    "DEFAULT_RULES_PATH",
    "RuleFileError",
    "RuleProblem",
    "RuleSet",
    "load_rule_set",
    "rule_set_from_text",
]
