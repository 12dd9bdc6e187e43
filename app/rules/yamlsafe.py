"""A YAML reader for rule files that refuses the YAML 1.1 traps instead of guessing.

PyYAML follows YAML 1.1, where an unquoted ``no`` is ``False`` (so Norway's ``NO`` becomes a
boolean), ``010`` is octal, ``1_000`` is a thousand and ``1:30`` is ninety. A rule file is
read by people who do not program; every such scalar is rejected with its line so the author
can quote it. Duplicate keys, which PyYAML silently resolves to the last one, are rejected.

Rule text also arrives over HTTP (``POST /v1/rules/evaluate``), so the reader bounds what
would otherwise fail outside the YAML errors: nesting (PyYAML composes recursively, and
50,000 ``[`` raise ``RecursionError``), whole numbers (``int()`` refuses more than 4,300
digits with a ``ValueError``) and decimals that overflow to infinity.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

_TRUE_FALSE = frozenset({"true", "false"})
_DECIMAL_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_DECIMAL_FLOAT = re.compile(r"^[-+]?(0|[1-9][0-9]*)?\.[0-9]+([eE][-+]?[0-9]+)?$")
_AMBIGUOUS_STRINGS = frozenset({"y", "Y", "n", "N"})


class YamlTrap(yaml.YAMLError):
    """A scalar or key whose YAML 1.1 reading would surprise the author."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


MAX_ALIASES = 100
#: How deep mappings and lists may nest. The default protocol nests 10 deep (conditions
#: themselves may nest 12, see app/rules/loader.py); the bound keeps PyYAML's recursive
#: composer, and the construction after it, far from Python's recursion limit.
MAX_DEPTH = 50
#: The largest whole number a rule file may hold: the largest a JSON reader of a decision's
#: trace keeps exactly (2**53 - 1), as in the audit trail.
MAX_INT = 2**53 - 1


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 surprises, and with bounds on aliases (no "billion
    laughs") and on nesting."""

    aliases_seen = 0
    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_ALIASES:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise YamlTrap(
                    f"more than {MAX_ALIASES} aliases (*name)", event.start_mark.line + 1
                )
        nested = int(self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested and self.depth >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise YamlTrap(
                f"mappings and lists nest more than {MAX_DEPTH} deep", event.start_mark.line + 1
            )
        self.depth += nested
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= nested

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlTrap("merge keys (<<) are not allowed in rule files", _line(key_node))
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise YamlTrap(f"duplicate key {key!r}", _line(key_node))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _bool(loader: StrictLoader, node: ScalarNode) -> bool:
    text = str(node.value)
    if text.lower() not in _TRUE_FALSE or text not in {"true", "false", "True", "False"}:
        raise YamlTrap(
            f"unquoted {text!r} is read as a boolean by YAML 1.1: write true/false, "
            f"or quote it ('{text}') if you mean the text",
            _line(node),
        )
    return text.lower() == "true"


def _int(loader: StrictLoader, node: ScalarNode) -> int:
    text = str(node.value)
    if not _DECIMAL_INT.match(text):
        raise YamlTrap(
            f"unquoted {text!r} is not a plain decimal number (YAML 1.1 reads underscores, "
            "leading zeros as octal, 0x, 0b and 1:30 sexagesimal): write plain digits, "
            "or quote it if you mean the text",
            _line(node),
        )
    # Compared by length first: int() of 100,000 digits is slow, and past 4,300 a ValueError.
    if len(text.lstrip("+-")) > len(str(MAX_INT)) or abs(int(text)) > MAX_INT:
        raise YamlTrap(
            f"a whole number in a rule file is at most {MAX_INT:,} either side of zero",
            _line(node),
        )
    return int(text)


def _float(loader: StrictLoader, node: ScalarNode) -> float:
    text = str(node.value)
    if not _DECIMAL_FLOAT.match(text):
        raise YamlTrap(
            f"unquoted {text!r} is not a plain decimal number (no underscores, .inf, .nan "
            "or sexagesimal): write e.g. 72.5, or quote it if you mean the text",
            _line(node),
        )
    value = float(text)
    if math.isinf(value):
        raise YamlTrap("a number in a rule file must be finite: this one is too large", _line(node))
    return value


def _timestamp(loader: StrictLoader, node: ScalarNode) -> Any:
    raise YamlTrap(
        f"unquoted {node.value!r} is read as a date by YAML: quote it if you mean the text",
        _line(node),
    )


def _str(loader: StrictLoader, node: ScalarNode) -> str:
    value = loader.construct_scalar(node)
    assert isinstance(value, str)
    if node.style is None and value in _AMBIGUOUS_STRINGS:
        raise YamlTrap(
            f"unquoted {value!r} means a boolean to some YAML 1.1 readers: write true/false, "
            f"or quote it ('{value}') if you mean the text",
            _line(node),
        )
    return value


StrictLoader.add_constructor("tag:yaml.org,2002:bool", _bool)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", _float)
StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)
StrictLoader.add_constructor("tag:yaml.org,2002:str", _str)


def load_yaml(text: str) -> Any:
    """Parse one YAML document strictly. Raises ``YamlTrap`` or ``yaml.YAMLError``."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
