"""The campaigns as pytest tests: one per campaign that applies to ``--target``, run on every
xdist worker (``--dist each``), each worker with its own target instance and seed."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import allure
import pytest

import fuzz.cuse
import fuzz.fuse
import fuzz.virtio
from fuzz.campaign import Runner
from fuzz.database import open_database
from fuzz.findings import Finding
from fuzz.stage import CAMPAIGNS
from fuzz.stats import Tally, coverage_table
from targets.spec import parse_spec

_LOADED = (fuzz.cuse, fuzz.fuse, fuzz.virtio)  # each registers its campaign


def _applicable(config: pytest.Config) -> list[str]:
    spec = parse_spec(config.getoption("--target"))
    wanted = config.getoption("--fuzz-campaign")
    return [name for name, campaign in CAMPAIGNS.items()
            if campaign.applies(spec) and (not wanted or name in wanted)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "campaign_name" in metafunc.fixturenames:
        names = _applicable(metafunc.config)
        metafunc.parametrize("campaign_name", names or ["none"])


def _worker(config: pytest.Config) -> str:
    return str(getattr(config, "workerinput", {}).get("workerid", "main"))


def _worker_number(worker: str) -> int:
    """0 for the only process of a run without xdist and for gw0: a seed gives the first
    worker the same examples whatever the number of jobs."""
    return int(worker[2:]) if worker.startswith("gw") else 0


def test_campaign(campaign_name: str, request: pytest.FixtureRequest) -> None:
    config = request.config
    spec = parse_spec(config.getoption("--target"))
    if campaign_name == "none":
        pytest.skip(f"not applicable: no fuzz campaign speaks to {spec.text} (a mount target: "
                    "fuzz the daemon behind it with its own spec)")
    campaign = CAMPAIGNS[campaign_name]
    allure.dynamic.epic("fuzz")
    allure.dynamic.feature(campaign.name)
    allure.dynamic.story(f"FUZZ-{campaign.name.upper()}")
    allure.dynamic.severity(allure.severity_level.CRITICAL)  # a crash or hang: a must, always
    allure.dynamic.label("level", "must")
    allure.dynamic.description(campaign.description)
    worker = _worker(config)
    tally = Tally()
    stats = config.getoption("--fuzz-stats")
    if stats:
        Path(stats).mkdir(parents=True, exist_ok=True)
        tally.path = Path(stats) / f"{campaign.name}-{worker}.json"
    base = config.getoption("--fuzz-seed")
    seed = (base if base is not None else random.SystemRandom().getrandbits(32)) ^ zlib.crc32(
        f"{campaign.name}/{_worker_number(worker)}".encode())
    seconds = config.getoption("--fuzz-seconds") / max(1, len(_applicable(config)))
    database = open_database(config.getoption("--fuzz-db"), f"fusecheck-fuzz:{campaign.name}:{spec.text}")
    findings: list[tuple[Finding, Path]] = []
    runner = Runner(campaign, spec, tally, Path(config.getoption("--findings")), database,
                    deadline=config.getoption("--reply-timeout"), steps=config.getoption("--fuzz-steps"),
                    batch=config.getoption("--fuzz-batch"), stop_after=config.getoption("--fuzz-stop-after"),
                    shrink_grace=config.getoption("--fuzz-shrink-grace"),
                    on_finding=lambda finding, where: findings.append((finding, where)))
    allure.dynamic.parameter("target", spec.text)
    allure.dynamic.parameter("seed", seed)
    allure.dynamic.parameter("worker", worker)
    try:
        runner.run(seconds, seed=seed)
    finally:
        allure.attach("\n".join(coverage_table(tally)), name="coverage (opcode x field class)",
                      attachment_type=allure.attachment_type.TEXT)
        for finding, where in findings:
            for part in ("sequence.txt", "finding.json", "stderr.txt"):
                allure.attach.file(where / part, name=f"{finding.signature} {part}",
                                   attachment_type=allure.attachment_type.TEXT)
            allure.attach.file(where / finding.reproducer, name=f"{finding.signature}.pcap",
                               attachment_type=allure.attachment_type.PCAP)
        request.node.user_properties.append(("fuzz", f"{tally.requests} requests, "
                                             f"{tally.examples} examples, pid {os.getpid()}"))
    if findings:
        pytest.fail("\n".join(f"{f.headline()}: {f.explanation[:300]}\n  kept in {where}\n  "
                              f"replay: {f.replay_command(where)}" for f, where in findings), pytrace=False)
