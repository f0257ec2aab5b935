"""pytest options of the fuzz campaigns (``python -m fuzz run`` passes them)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fusecheck fuzz")
    group.addoption("--fuzz-seconds", type=float, default=60.0,
                    help="how long each worker fuzzes (split between the target's campaigns)")
    group.addoption("--fuzz-stats", default=None, metavar="DIR",
                    help="where each worker writes its tally (the runner's progress line reads it)")
    group.addoption("--fuzz-db", default=None, metavar="URL|DIR",
                    help="the example database: redis://HOST:PORT[/DB] or a directory "
                         "(default: .hypothesis/fuzz)")
    group.addoption("--fuzz-seed", type=int, default=None, help="the campaign's seed (default: random)")
    group.addoption("--fuzz-steps", type=int, default=25, help="steps per example")
    group.addoption("--fuzz-batch", type=int, default=50, help="examples per seed")
    group.addoption("--fuzz-stop-after", type=int, default=None, metavar="N",
                    help="end a worker's campaign after N findings (default: run for the duration)")
    group.addoption("--fuzz-shrink-grace", type=float, default=60.0, metavar="S",
                    help="seconds a finding may shrink (also past the campaign's end)")
    group.addoption("--fuzz-campaign", action="append", default=[], metavar="NAME",
                    help="only these campaigns (fuse, cuse, virtio); repeatable")
