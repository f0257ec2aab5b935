"""``python -m reports coherency [--target FAMILY ...] [--out DIR]``: the cache-contract matrix;
``python -m reports matrices RESULTS [RESULTS ...] OUT``: the coherency and ACL matrices of runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports import coherency, matrices


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports")
    commands = parser.add_subparsers(dest="command", required=True)
    matrix = commands.add_parser("coherency", help="the cache-contract matrix: mode x target family")
    matrix.add_argument("--target", action="append", dest="families",
                        help=f"a family with cache modes ({', '.join(coherency.FAMILIES)}); repeatable; "
                             "default: all")
    matrix.add_argument("--out", type=Path, help="write coherency.md and coherency.json here")
    built = commands.add_parser("matrices", help="the coherency and ACL matrices of allure results")
    built.add_argument("dirs", nargs="+", type=Path, metavar="RESULTS",
                       help="allure results directories, then the output directory last")
    args = parser.parse_args(argv)
    if args.command == "matrices":
        if len(args.dirs) < 2:
            parser.error("matrices needs RESULTS [RESULTS ...] OUT")
        return matrices.main(args.dirs[:-1], args.dirs[-1])
    return coherency.main(args.families or list(coherency.FAMILIES), args.out)


if __name__ == "__main__":
    sys.exit(main())
