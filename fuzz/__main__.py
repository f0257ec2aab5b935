"""``python -m fuzz``: replay and show saved findings.

- ``replay FILE --target SPEC``: send the saved sequence to a fresh instance of SPEC and
  say whether it still reproduces (exit status 1), or not (0); 2 for a usage error.
- ``show FILE``: the saved sequence, one line per message, and its notes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fuzz.replay import replay
from fuzz.reproducer import describe, load
from protocol.pcap import PcapError
from targets.errors import TargetError
from targets.spec import parse_spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    again = commands.add_parser("replay", help="replay a saved finding against a target")
    again.add_argument("file", type=Path)
    again.add_argument("--target", required=True, help="the target spec, as for pytest --target")
    again.add_argument("--reply-timeout", type=float, default=5.0, help="seconds per reply")
    show = commands.add_parser("show", help="print a saved finding")
    show.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        exchanges, notes = load(args.file)
    except (OSError, PcapError) as exc:
        print(f"python -m fuzz: {args.file}: {exc}", file=sys.stderr)
        return 2
    for text in notes:
        print(f"recorded: {text}")
    if args.command == "show":
        print(describe(exchanges))
        return 0
    try:
        outcome = replay(exchanges, parse_spec(args.target), timeout=args.reply_timeout)
    except (TargetError, ValueError) as exc:
        print(f"python -m fuzz: {exc}", file=sys.stderr)
        return 2
    print("\n".join(outcome.lines))
    if outcome.reproduced:
        print(f"REPRODUCED against {args.target}:")
        print("\n".join(f"- {problem}" for problem in outcome.problems))
        return 1
    print(f"not reproduced: {args.target} answered all {len(exchanges)} requests as the model expects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
