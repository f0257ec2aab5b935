"""Rules: a stable id, a one-line statement, where it comes from; the ``rule`` decorator.

``@rule("FUSE-INIT-001", "statement", source="...")`` registers the rule,
labels the test for allure (epic = area, feature = topic, story = rule id,
severity from the rule's level) and marks it so the run can print one line per rule.

A rule's level says how binding it is, from what its source is (``level_of``): **must**
for what the kernel enforces, POSIX requires or a protocol specification (virtio,
vhost-user) demands: a daemon that fails it breaks programs or the connection; **should**
for what libfuse, the kernel's documentation and the virtio-fs design note do or advise
(conventions a kernel copes without, the cache-mode contract); **may** for what a
specification leaves to the implementation. A failed must rule is a failed required rule
in the report, a failed should or may rule a failed optional one.
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
    level: str = "must"  # must | should | may (``LEVELS``)


RULES: dict[str, Rule] = {}
OPCODES = frozenset(OPCODE_NAMES.values())
#: a rule's level -> allure's severity
LEVELS = {"must": allure.severity_level.CRITICAL, "should": allure.severity_level.NORMAL,
          "may": allure.severity_level.MINOR}
#: sources whose word is advice or practice, not a requirement (by how the source begins)
ADVISORY_SOURCES = ("libfuse", "seed:", "Documentation/", "fusecheck")


def level_of(source: str) -> str:
    """The level a rule's source gives it: should for libfuse's practice, the kernel's
    documentation, the design note and fusecheck's own contracts; must otherwise."""
    return "should" if source.startswith(ADVISORY_SOURCES) else "must"


def rule(rule_id: str, statement: str, *, source: str, area: str = "protocol",
         feature: str | None = None, opcodes: tuple[str, ...] | None = None,
         feature_at_run: bool = False, level: str | None = None) -> Callable[[F], F]:
    """Declare the test below as the check of one rule; ``opcodes`` default to the one its id
    names (FUSE-LOOKUP-001: FUSE_LOOKUP), if any. ``feature_at_run``: the test labels its allure
    feature itself when it runs (the cache mode, an ACL entry kind); ``feature`` only names it.
    ``level`` defaults to what the source gives (``level_of``)."""
    if rule_id in RULES:
        raise ValueError(f"rule id {rule_id} declared twice")
    topic = feature or rule_id.split("-")[1]
    if opcodes is None:  # a wire rule named after its opcode (POSIX rules go through the kernel)
        named = f"FUSE_{rule_id.split('-')[1]}"
        opcodes = (named,) if rule_id.startswith("FUSE-") and named in OPCODES else ()
    level = level or level_of(source)
    if level not in LEVELS:
        raise ValueError(f"rule {rule_id}: level {level!r} is not one of {', '.join(LEVELS)}")
    RULES[rule_id] = Rule(rule_id, statement, source, area, topic, tuple(opcodes), level)

    def decorate(test: F) -> F:
        marked = pytest.mark.rule(rule_id)(test)
        static = () if feature_at_run else (allure.feature(topic),)
        for label in (allure.epic(area), *static, allure.story(rule_id),
                      allure.title(f"{rule_id}: {statement}"),
                      allure.description(f"{statement}\n\nSource: {source}"),
                      allure.label("rule", rule_id), allure.label("level", level),
                      allure.severity(LEVELS[level])):
            marked = label(marked)
        return marked  # type: ignore[no-any-return]

    return decorate
