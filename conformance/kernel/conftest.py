"""Fixtures of the kernel rules: the reference server mounted with recording, as the probe.

The rules are about the kernel, so they apply to ``--target ref`` only (with its
options, a cache mode of the rule's own, and ``--backing`` as ``source``); any
other target makes them "not applicable". ``workload`` runs the syscall workload
on its own mount, unmounts it and audits the whole recording; ``probes`` mounts one
probe per cache mode, for the counting rules. Every mount is torn down at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.kernel import workload as syscalls
from conformance.kernel.probe import Probe, Probes, Workload, reference_target


@pytest.fixture(scope="session")
def ref_options(request: pytest.FixtureRequest) -> dict[str, str | bool]:
    """The ``--target ref`` options the probes start with; not applicable for any other target."""
    spec = reference_target(request.config, "the kernel rules")
    options = {key: value for key, value in spec.options.items() if key != "record"}
    backing = request.config.getoption("--backing")
    if backing:
        options["source"] = str(Path(backing).resolve())
    return options


@pytest.fixture(scope="session")
def probes(ref_options: dict[str, str | bool], tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Probes]:
    opened = Probes(ref_options, tmp_path_factory.mktemp("kernel-probes"),
                    request.config.getoption("--op-timeout"))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="session")
def workload(ref_options: dict[str, str | bool], tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Workload:
    """The workload on its own probe (the target's ref options), then the unmount."""
    probe = Probe(dict(ref_options), tmp_path_factory.mktemp("kernel-workload") / "workload.pcap",
                  request.config.getoption("--op-timeout"))
    probe.open()
    failed = True
    try:
        with probe.watchdog():
            syscalls.run(probe.path, f"kernel-workload-{os.getpid()}")
        started = time.monotonic()
        settled = probe.wait_for(lambda audit: not audit.dropped())
        settle_seconds = time.monotonic() - started
        unbalanced = probe.audit.balance()
        outstanding = probe.audit.outstanding()
        unmount_started = time.time()
        failed = False
    finally:
        probe.close(failed=failed)
    return Workload(probe, probe.audit, settled, settle_seconds, unbalanced, outstanding,
                    unmount_started, list(probe.audit.findings))
