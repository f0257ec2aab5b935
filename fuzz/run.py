"""``python -m fuzz run``: a campaign for a scheduler: pytest-xdist workers fuzz the target
(each its own instance, ``--dist each``), this process shows a live progress line from
their tallies, then a summary, and exits with a status a scheduler can act on.

Exit status: 0 nothing found; 1 findings (listed, each with its replay command); 3 the
campaign could not run (the target does not start, a harness error); 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fuzz.findings import Finding, found
from fuzz.stats import FIELD_CLASSES, Tally, coverage_table, gather

FOUND, BROKEN, USAGE = 1, 3, 2
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
REPO = Path(__file__).resolve().parent.parent
PLAIN_EVERY = 30.0  # seconds between progress lines when stdout is not a terminal
FIRST_PLAIN = 5.0  # the first of them


def duration(text: str) -> float:
    """"8h", "10m", "90s", "1h30m" or plain seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 8h)")
    return sum(float(n) * UNITS[u or "s"] for n, u in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="the target spec, as for pytest --target")
    parser.add_argument("--duration", type=duration, default=duration("10m"), help="e.g. 10m, 8h")
    parser.add_argument("--jobs", type=int, default=1, help="parallel workers, each with its own target")
    parser.add_argument("--db", default=None, metavar="URL|DIR",
                        help="shared example database: redis://HOST:PORT[/DB] or a directory")
    parser.add_argument("--findings", type=Path, default=Path("fusecheck-findings"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--reply-timeout", type=float, default=2.0, help="seconds per reply (hang deadline)")
    parser.add_argument("--steps", type=int, default=25, help="steps per example")
    parser.add_argument("--campaign", action="append", default=[], help="only these: fuse, cuse, virtio")
    parser.add_argument("--alluredir", default=None, help="write allure results here")
    parser.add_argument("--shrink-grace", type=duration, default=60.0,
                        help="how long a finding may shrink (also past --duration); then the smallest "
                             "failing example so far is kept")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="each worker ends after N findings (default: run for the whole duration)")


def pytest_argv(args: argparse.Namespace, stats: Path) -> list[str]:
    argv = [sys.executable, "-m", "pytest", str(REPO / "fuzz" / "test_campaign.py"), "-q", "-p",
            "no:cacheprovider", "--target", args.target, "--fuzz-seconds", str(args.duration),
            "--fuzz-stats", str(stats), "--findings", str(args.findings.resolve()),
            "--reply-timeout", str(args.reply_timeout), "--fuzz-steps", str(args.steps)]
    if args.jobs > 1:
        argv += ["-n", str(args.jobs), "--dist", "each"]
    else:
        argv += ["-n", "0"]
    for name, value in (("--fuzz-db", args.db), ("--fuzz-seed", args.seed), ("--alluredir", args.alluredir),
                        ("--fuzz-stop-after", args.stop_after), ("--fuzz-shrink-grace", args.shrink_grace)):
        if value is not None:
            argv += [name, str(value)]
    for name in args.campaign:
        argv += ["--fuzz-campaign", name]
    return argv


def progress(tally: Tally, workers: int, elapsed: float, total: float) -> str:
    rate = tally.requests / elapsed if elapsed > 0 else 0.0
    return (f"[{_clock(elapsed)}/{_clock(total)}] {workers} worker(s) · {rate:,.0f} req/s · "
            f"{tally.requests:,} requests · {tally.examples:,} examples · {tally.findings} finding(s) · "
            f"{len(tally.opcodes())} opcodes · {tally.restarts} restart(s)")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def new_findings(root: Path, since: float) -> list[tuple[Finding, Path]]:
    """The findings this run wrote (a findings directory collects many runs')."""
    return [(f, p) for f, p in found(root) if (p.parent / "finding.json").stat().st_mtime >= since]


def summary(args: argparse.Namespace, tally: Tally, elapsed: float, status: int, tail: str,
            kept: list[tuple[Finding, Path]]) -> str:
    lines = [f"fuzz campaign against {args.target}: {_clock(elapsed)}, {args.jobs} worker(s)",
             f"  {tally.requests:,} requests ({tally.requests / max(elapsed, 1e-9):,.0f}/s), "
             f"{tally.replies:,} replies, {tally.examples:,} examples, {tally.restarts} target restart(s)",
             "  by field class: " + ", ".join(
                 f"{k} {sum(n for (_, kk), n in tally.sent.items() if kk == k):,}" for k in FIELD_CLASSES),
             f"  opcodes covered: {len(tally.opcodes())}"]
    if kept:
        lines.append(f"  findings ({len(kept)}), kept in {args.findings}:")
        for finding, directory in kept:
            lines += [f"  - {finding.headline()}", f"      {finding.explanation.splitlines()[0][:200]}",
                      f"      replay: {finding.replay_command(directory.parent)}"]
    else:
        lines.append("  no findings")
    if status == USAGE:
        lines.append("  no campaign applies to this target:\n" + tail)
    elif status == BROKEN:
        lines.append("  the campaign could not run as asked:\n" + tail)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    args.findings.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fusecheck-fuzz-") as scratch:
        stats = Path(scratch) / "stats"
        stats.mkdir()
        log = Path(scratch) / "pytest.log"
        started, wall = time.monotonic(), time.time() - 1
        tty = sys.stdout.isatty()
        with open(log, "wb") as out:
            proc = subprocess.Popen(pytest_argv(args, stats), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            last_plain = 0.0
            try:
                while proc.poll() is None:
                    time.sleep(1.0)
                    elapsed = time.monotonic() - started
                    tally, workers = gather(stats)
                    line = progress(tally, workers, elapsed, args.duration)
                    if tty:
                        print("\r" + line.ljust(120), end="", flush=True)
                    elif elapsed - last_plain >= (PLAIN_EVERY if last_plain else FIRST_PLAIN):
                        print(line, flush=True)
                        last_plain = elapsed
            except KeyboardInterrupt:
                proc.terminate()
            finally:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if tty:
            print()
        elapsed = time.monotonic() - started
        tally, _ = gather(stats)
        text = log.read_text(errors="replace")
        kept = new_findings(args.findings, wall)
        status = _status(proc.returncode, text, bool(kept))
        (args.findings / "coverage.md").write_text("\n".join(coverage_table(tally)) + "\n")
        print(summary(args, tally, elapsed, status, text[-3000:], kept))
        print(f"  coverage per opcode and field class: {args.findings / 'coverage.md'}")
        return status


def _status(returncode: int, log: str, findings: bool) -> int:
    """0 when the campaigns passed; FOUND when they failed with findings kept; USAGE when
    none applied (skipped); BROKEN for anything else (the suite's own failure)."""
    if findings and returncode == 1:
        return FOUND
    if returncode == 0 and " passed" in log:
        return 0
    if returncode == 0 and " skipped" in log:
        return USAGE
    return BROKEN
