"""Self-test reporting: the mutation score of the reference server's mutants."""

from __future__ import annotations

import pytest

_mutants: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == "mutant" and report.when == "call":
            name, _, verdict = str(value).partition("=")
            _mutants[name] = verdict


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _mutants:
        return
    killed = sorted(n for n, v in _mutants.items() if v == "killed")
    survived = sorted(n for n, v in _mutants.items() if v != "killed")
    terminalreporter.section("mutation score of the reference server")
    terminalreporter.write_line(f"{len(killed)}/{len(_mutants)} mutants killed "
                                f"({100 * len(killed) / len(_mutants):.0f}%)")
    for name in survived:
        terminalreporter.write_line(f"SURVIVED {name}")
