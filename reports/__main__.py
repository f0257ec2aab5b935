"""``python -m reports coherency [--target FAMILY ...] [--out DIR]``: the coherency matrix."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports import coherency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports")
    commands = parser.add_subparsers(dest="command", required=True)
    matrix = commands.add_parser("coherency", help="the cache-contract matrix: mode x target family")
    matrix.add_argument("--target", action="append", dest="families",
                        help=f"a family with cache modes ({', '.join(coherency.FAMILIES)}); repeatable; "
                             "default: all")
    matrix.add_argument("--out", type=Path, help="write coherency.md and coherency.json here")
    args = parser.parse_args(argv)
    return coherency.main(args.families or list(coherency.FAMILIES), args.out)


if __name__ == "__main__":
    sys.exit(main())
