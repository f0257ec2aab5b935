"""Rules: a stable id, a one-line statement, where it comes from; the ``rule`` decorator.

``@rule("FUSE-INIT-001", "statement", source="...")`` registers the rule,
labels the test for allure (epic = area, feature = topic, story = rule id)
and marks it so the run can print one line per rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import allure
import pytest

from protocol.constants import OPCODE_NAMES

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    statement: str
    source: str
    area: str
    feature: str
    opcodes: tuple[str, ...] = ()  # the FUSE opcodes (FUSE_LOOKUP...) whose handling it checks


RULES: dict[str, Rule] = {}
OPCODES = frozenset(OPCODE_NAMES.values())


def rule(rule_id: str, statement: str, *, source: str, area: str = "protocol",
         feature: str | None = None, opcodes: tuple[str, ...] | None = None,
         feature_at_run: bool = False) -> Callable[[F], F]:
    """Declare the test below as the check of one rule; ``opcodes`` default to the one its id
    names (FUSE-LOOKUP-001: FUSE_LOOKUP), if any. ``feature_at_run``: the test labels its allure
    feature itself when it runs (the cache mode, an ACL entry kind); ``feature`` only names it."""
    if rule_id in RULES:
        raise ValueError(f"rule id {rule_id} declared twice")
    topic = feature or rule_id.split("-")[1]
    if opcodes is None:  # a wire rule named after its opcode (POSIX rules go through the kernel)
        named = f"FUSE_{rule_id.split('-')[1]}"
        opcodes = (named,) if rule_id.startswith("FUSE-") and named in OPCODES else ()
    RULES[rule_id] = Rule(rule_id, statement, source, area, topic, tuple(opcodes))

    def decorate(test: F) -> F:
        marked = pytest.mark.rule(rule_id)(test)
        static = () if feature_at_run else (allure.feature(topic),)
        for label in (allure.epic(area), *static, allure.story(rule_id),
                      allure.title(f"{rule_id}: {statement}"),
                      allure.description(f"{statement}\n\nSource: {source}"),
                      allure.label("rule", rule_id)):
            marked = label(marked)
        return marked  # type: ignore[no-any-return]

    return decorate
