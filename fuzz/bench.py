"""``python -m fuzz bench --target SPEC [--seconds S]``: the fuzz campaign's request rate on
1 and 2 workers next to a C client's GETATTR round trips against the same daemon.

Measured in turn, so each has the machine to itself: the C client of ``targets.bench``
(compiled now, over a SEQPACKET socketpair, unpinned like the campaign), then the pytest
run ``python -m fuzz run`` starts (``fuzz.run.pytest_argv``) with 1 and with 2 workers.
A campaign's rate is each worker's requests over the seconds it fuzzed (its tally), summed
over the workers; the start-up of pytest and xdist is left out, unlike the run summary's
figure, which is printed too. The campaigns run with a fixed seed (``--seed``): worker 0 of
two runs the same examples as the single worker, so the ratios compare equal work. Goals:
one worker >= 50% of the C client's rate, two workers >= 1.7x one; with the CPUs a worker
and its daemon use, it prints the most two workers can reach on this machine. It reports
and does not gate: exit 0 when it measured, 2 when it could not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fuzz.findings import found
from fuzz.run import REPO, add_arguments, pytest_argv
from fuzz.stats import Tally, gather
from targets import bench as socket_bench
from targets.errors import TargetError
from targets.exec import ExecTarget

ONE_WORKER_GOAL = 0.5  # x the C client's rate
TWO_WORKERS_GOAL = 1.7  # x one worker's rate
WARM_UP = 0.3  # seconds of untimed C client round trips
T = TypeVar("T")
QUIET = 0.2  # CPUs other processes may use meanwhile before the figures are called disturbed


@dataclass
class CampaignRate:
    jobs: int
    rate: float  # requests per second of fuzzing, summed over the workers
    requests: int
    wall: float  # seconds of the whole pytest run, start-up included
    restarts: int
    cpus: float  # CPUs the workers and their targets used while fuzzing, on average
    findings: list[str]  # headlines: a finding's shrinking counts in the rate


def c_client_rate(target: str, seconds: float) -> float:
    """The C client's GETATTR round trips per second against a fresh ``target``."""
    with (socket_bench.bench_conditions(pin=False, budget=int(seconds * 2 + 120), who=""),
          tempfile.TemporaryDirectory(prefix="fusecheck-bench-") as tmp, ExecTarget(target) as t):
        binary = socket_bench.build_client(Path(tmp))
        _, _, unique = socket_bench.init(t.channel)
        loop = socket_bench.Loop(t.channel.sock, unique=unique)
        loop.c_client(binary, min(WARM_UP, seconds))
        return loop.c_client(binary, seconds)


def fuzzing_rate(stats: Path) -> float:
    """Sum over workers of requests / seconds fuzzed (a worker's campaigns run one after
    another, so its tallies add up; the workers run at once, so their rates add up)."""
    per_worker: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for path in stats.glob("*.json"):
        tally = Tally.from_json(json.loads(path.read_text()))
        seen = per_worker[path.stem.rsplit("-", 1)[-1]]
        seen[0] += tally.requests
        seen[1] += tally.seconds
    return sum(requests / seconds for requests, seconds in per_worker.values() if seconds > 0)


def campaign_rate(target: str, seconds: float, jobs: int, seed: int) -> CampaignRate:
    """The campaign as ``python -m fuzz run`` runs it, with a throwaway findings directory
    and example database; ``RuntimeError`` if it did not run."""
    with tempfile.TemporaryDirectory(prefix="fusecheck-bench-") as tmp:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(["--target", target, "--duration", f"{seconds:.3f}s", "--jobs", str(jobs),
                                  "--seed", str(seed), "--findings", f"{tmp}/findings", "--db", f"{tmp}/db"])
        stats = Path(tmp) / "stats"
        stats.mkdir()
        start = time.monotonic()
        out = subprocess.run(pytest_argv(args, stats), cwd=REPO, capture_output=True, text=True,
                             timeout=seconds * 3 + 180, check=False)
        wall = time.monotonic() - start
        tally, workers = gather(stats)
        if out.returncode not in (0, 1) or tally.requests == 0 or workers == 0:
            tail = (out.stdout + out.stderr)[-2000:]
            raise RuntimeError(f"the campaign on {jobs} worker(s) did not run "
                               f"(pytest exit {out.returncode}):\n{tail}")
        headlines = [finding.headline() for finding, _ in found(Path(tmp) / "findings")]
        cpus = tally.cpu / tally.seconds if tally.seconds else 0.0
        return CampaignRate(jobs, fuzzing_rate(stats), tally.requests, wall, tally.restarts, cpus, headlines)


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by the whole machine, and by this process and its reaped children."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    machine = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait
    usages = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return machine, sum(u.ru_utime + u.ru_stime for u in usages)


def others(measure: Callable[[], T]) -> tuple[T, float]:
    """``measure()`` and the CPUs that processes other than ours used meanwhile, on average."""
    (machine, own), start = _cpu_seconds(), time.monotonic()
    result = measure()
    (machine_after, own_after), wall = _cpu_seconds(), time.monotonic() - start
    return result, max(0.0, (machine_after - machine) - (own_after - own)) / wall


def verdict(value: float, goal: float) -> str:
    return "met" if value >= goal else "not met"


def report(target: str, seconds: float, seed: int, c_rate: float, one: CampaignRate, two: CampaignRate,
           busy: list[float]) -> None:
    ratio_one, ratio_two = one.rate / c_rate, two.rate / one.rate
    rows = [("C client, GETATTR round trips", c_rate, "", "", ""),
            ("campaign, 1 worker", one.rate, f"{ratio_one:.3f} x C client", f">= {ONE_WORKER_GOAL:g} x",
             verdict(ratio_one, ONE_WORKER_GOAL)),
            ("campaign, 2 workers", two.rate, f"{ratio_two:.2f} x 1 worker", f">= {TWO_WORKERS_GOAL:g} x",
             verdict(ratio_two, TWO_WORKERS_GOAL))]
    print(f"fuzz bench against {target}, {seconds:g} s per measurement, one after another "
          f"({os.cpu_count()} CPUs), campaign seed {seed}")
    print(f"  {'what':30} {'requests/s':>10}   {'ratio':18} {'goal':8} {'result':8} other load")
    for (what, rate, ratio, goal, result), load in zip(rows, busy, strict=True):
        print(f"  {what:30} {rate:>10,.0f}   {ratio:18} {goal:8} {result:8} {load:.2f} CPU")
    for run in (one, two):
        print(f"  {run.jobs} worker(s): {run.requests:,} requests, {run.restarts} target restart(s), "
              f"{len(run.findings)} finding(s); {run.requests / run.wall:,.0f} req/s over the whole "
              f"{run.wall:.1f} s run, start-up included (as the run summary counts)")
        for headline in run.findings:
            print(f"    finding (its shrinking is in the rate): {headline}")
    cpus = os.cpu_count() or 1
    if one.cpus:  # two workers need twice that: more than the machine has caps the ratio
        print(f"  while fuzzing, one worker with its daemon used {one.cpus:.2f} CPUs, two {two.cpus:.2f}: "
              f"on {cpus} CPUs two workers can reach at most {min(2.0, cpus / one.cpus):.2f} x one")
    if max(busy) > QUIET:
        print(f"  disturbed: other processes used up to {max(busy):.2f} CPU while measuring; "
              "the figures are off, 2 workers' most of all (run again on a quiet machine)")


def main(target: str, seconds: float, seed: int = 1) -> int:
    """Measure, print the table; 0 when it measured, 2 when it could not."""
    try:
        c_rate, c_busy = others(lambda: c_client_rate(target, seconds))
        one, one_busy = others(lambda: campaign_rate(target, seconds, 1, seed))
        two, two_busy = others(lambda: campaign_rate(target, seconds, 2, seed))
    except (TargetError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"fuzz bench could not measure: {exc}", file=sys.stderr)
        return 2
    report(target, seconds, seed, c_rate, one, two, [c_busy, one_busy, two_busy])
    return 0
