"""RULES.md is generated from the code, current, and names every opcode a server receives."""

from __future__ import annotations

from conformance.rulelist import RULES_MD, SERVER_OPCODES, by_opcode, load_rules, render


def test_rules_md_is_current() -> None:
    stale = "RULES.md is stale: run python -m conformance.rulelist"
    assert RULES_MD.read_text() == render(load_rules()), stale


def test_every_server_opcode_has_rules() -> None:
    table = by_opcode(load_rules())
    bare = [op for op in ("INIT", *SERVER_OPCODES) if not table[op]]
    assert not bare, f"opcodes no rule checks: {bare}"


def test_every_rule_is_listed_once() -> None:
    rows = [line.split(" | ")[0] for line in RULES_MD.read_text().splitlines() if line.startswith("| ")]
    for rule_id in load_rules():
        assert rows.count(f"| {rule_id}") == 1, rule_id
