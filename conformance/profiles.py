"""Hypothesis profiles: how many examples a run draws (``HYPOTHESIS_PROFILE`` picks one).

``dev`` for a person at a terminal, ``ci`` deterministic, ``soak`` for nightly
fuzzing, ``smoke`` for the self-tests' child runs against real daemons, ``certify`` for
the certification profile: deterministic (each test's seed comes from its own code, so a
suite version always draws the same examples), no example database (nothing a previous
run saved changes what is drawn), fixed example counts (``CERTIFY``).  The
differential state machines draw ``STATEFUL_EXAMPLES[profile]`` examples; a machine
with a count of its own passes its table (``PROTOCOL_MACHINE_EXAMPLES``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, run_state_machine_as_test

from targets.skip import in_ci

STATEFUL_EXAMPLES = {"dev": 200, "ci": 200, "soak": 5_000, "smoke": 20, "certify": 200}
#: FUSE-MACHINE-001, the kernel-role machine: its examples are cheap (no mount, no tmpfs twin)
PROTOCOL_MACHINE_EXAMPLES = {"dev": 300, "ci": 300, "soak": 10_000, "smoke": 40, "certify": 300}
#: POSIX-ACL-014, the ACL differential rule: random ACLs and callers against tmpfs
ACL_RANDOM_EXAMPLES = {"dev": 300, "ci": 300, "soak": 5_000, "smoke": 30, "certify": 300}
#: The certification profile's examples per property test (the state machines: the tables above)
CERTIFY = 100
PROFILES = ("dev", "ci", "soak", "smoke", "certify")


def load() -> str:
    """Register the profiles and load the one in force; its name."""
    slow = [HealthCheck.too_slow]
    settings.register_profile("dev", max_examples=50, deadline=None)
    settings.register_profile("ci", max_examples=100, deadline=None, derandomize=True,
                              suppress_health_check=slow)
    settings.register_profile("certify", max_examples=CERTIFY, deadline=None, derandomize=True,
                              database=None, suppress_health_check=slow)
    settings.register_profile("soak", max_examples=20_000, stateful_step_count=200, deadline=None)
    # smoke: the self-tests only need to see a rule fail, not the smallest example of it
    settings.register_profile("smoke", max_examples=20, deadline=None, derandomize=True,
                              suppress_health_check=slow,
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    name = profile()
    settings.load_profile(name)
    return name


def profile() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE", "ci" if in_ci() else "dev")


def stateful_settings(counts: dict[str, int] | None = None) -> settings:
    """The profile in force, with the state machines' example count for it (from ``counts``,
    ``STATEFUL_EXAMPLES`` by default)."""
    default = settings.default
    assert default is not None
    examples = (counts or STATEFUL_EXAMPLES).get(profile(), default.max_examples)
    return settings(default, max_examples=examples)


def run_stateful(factory: Callable[[], RuleBasedStateMachine], part: int = 0, parts: int = 1,
                 counts: dict[str, int] | None = None) -> None:
    """Run slice ``part`` of ``parts`` of a state machine's examples (each slice a test of its own,
    so xdist runs them side by side); together they draw the profile's count. Under a
    derandomized profile each slice has its own fixed seed, so slices differ and runs repeat."""
    whole = stateful_settings(counts)
    share = settings(whole, max_examples=-(-whole.max_examples // parts))
    if parts == 1 or not whole.derandomize:
        run_state_machine_as_test(factory, settings=share)  # type: ignore[arg-type]
        return
    # the function run_state_machine_as_test runs, which hypothesis splits out for HypoFuzz
    test = get_state_machine_test(factory, settings=share)  # type: ignore[arg-type]
    seed(int.from_bytes(f"fusecheck {part}/{parts}".encode(), "big"))(test)()
