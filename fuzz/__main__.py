"""``python -m fuzz``: run campaigns, replay and show findings, measure the request rate.

- ``run --target SPEC --duration 8h --jobs N [--db redis://HOST:PORT]``: a campaign with a
  live progress line and a summary (``fuzz.run``); exit status 0 nothing found, 1 findings,
  2 usage error (or no campaign for the target), 3 the campaign could not run.
- ``replay FINDING --target SPEC [--attempts N]``: a finding directory (``finding.json``) or
  a saved pcap replayed against a fresh instance of SPEC (up to N times, for a finding that
  depends on timing); exit status 1 when it still reproduces, 0 when not, 2 for a usage error.
- ``show FILE``: a saved sequence, one line per message, and its notes.
- ``known [--only NAME]``: the real findings in third-party daemons (``fuzz.known``), each
  reproduced against this machine's daemon; exit status 1 when none still reproduces.
- ``bench --target SPEC``: the campaign's request rate on 1 and 2 workers next to a C
  client's round trips against the same daemon (``fuzz.bench``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fuzz.replay import Outcome
from protocol.pcap import PcapError
from targets.errors import TargetError
from targets.spec import parse_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    from fuzz import run as running

    running.add_arguments(commands.add_parser("run", help="run a fuzz campaign"))
    again = commands.add_parser("replay", help="replay a finding or a saved pcap against a target")
    again.add_argument("file", type=Path)
    again.add_argument("--target", required=True, help="the target spec, as for pytest --target")
    again.add_argument("--reply-timeout", type=float, default=2.0, help="seconds per reply")
    again.add_argument("--attempts", type=int, default=1,
                       help="replay a finding up to this many times, each on a fresh instance (a "
                            "finding that depends on timing may take several)")
    show = commands.add_parser("show", help="print a saved finding")
    show.add_argument("file", type=Path)
    bench = commands.add_parser("bench", help="the campaign's request rate against a C client's")
    bench.add_argument("--target", default="hello_ll")
    bench.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    bench.add_argument("--seed", type=int, default=1, help="the campaigns' seed (the same examples each run)")
    known = commands.add_parser("known", help="reproduce the real findings listed in fuzz/known.py")
    known.add_argument("--only", default=None, help="one of them, by name")
    args = parser.parse_args(argv)
    if os.geteuid() == 0:  # every mount a target makes (CUSE's stand-in) dies with this process
        from targets import fusedev

        try:
            fusedev.enter_private_mount_namespace()
        except fusedev.NamespaceError as exc:
            print(f"python -m fuzz: {exc.message}; {exc.hint}", file=sys.stderr)
            return 2
    try:
        if args.command == "run":
            parse_spec(args.target)
            return running.run(args)
        if args.command == "known":
            from fuzz.known import main as known_main

            return known_main(args.only)
        if args.command == "bench":
            from fuzz.bench import main as bench_main

            return bench_main(args.target, args.seconds, args.seed)
        if args.command == "replay" and _is_finding(args.file):
            return _replay_finding(args)
        return _saved(args)
    except (TargetError, ValueError) as exc:
        print(f"python -m fuzz: {exc}", file=sys.stderr)
        return 2


def _is_finding(path: Path) -> bool:
    return (path / "finding.json").exists() or path.name == "finding.json"


def _replay_finding(args: argparse.Namespace) -> int:
    import fuzz.test_campaign  # noqa: F401  (registers every campaign)
    from fuzz.replay import replay_finding

    attempts = max(1, args.attempts)
    outcome = replay_finding(args.file, parse_spec(args.target), timeout=args.reply_timeout,
                             attempts=attempts)
    return _verdict(outcome, args.target, "came through the finding's sequence unharmed"
                    + (f" {attempts} times" if attempts > 1 and not outcome.reproduced else ""))


def _verdict(outcome: Outcome, target: str, unharmed: str) -> int:
    """Print a replay's lines and whether it reproduced: exit status 1 if it did, else 0."""
    print("\n".join(outcome.lines))
    if outcome.reproduced:
        print(f"REPRODUCED against {target}:")
        print("\n".join(f"- {problem}" for problem in outcome.problems))
        return 1
    print(f"not reproduced: {target} {unharmed}")
    return 0


def _saved(args: argparse.Namespace) -> int:
    """A pcap of a conformance machine's failure (``show`` any pcap)."""
    from fuzz.replay import replay
    from fuzz.reproducer import describe, load

    try:
        exchanges, notes = load(args.file)
    except (OSError, PcapError) as exc:
        print(f"python -m fuzz: {args.file}: {exc}", file=sys.stderr)
        return 2
    for text in notes:
        print(f"recorded: {text}")
    if args.command == "show":
        try:
            print(describe(exchanges))
        except Exception:  # a fuzz finding's broken messages: as scapy reads them
            from fuzz.findings import dissect

            print(dissect(exchanges))
        return 0
    outcome = replay(exchanges, parse_spec(args.target), timeout=args.reply_timeout)
    return _verdict(outcome, args.target, f"answered all {len(exchanges)} requests as the model expects")


if __name__ == "__main__":
    sys.exit(main())
