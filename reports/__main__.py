"""``python -m reports``: what a run's allure results become.

- ``coherency [--target FAMILY ...] [--out DIR]``: the cache-contract matrix;
- ``matrices RESULTS [RESULTS ...] OUT``: the coherency and ACL matrices of runs;
- ``summary RESULTS [RESULTS ...] OUT``: the certification summary (summary.json, summary.md);
- ``html RESULTS [RESULTS ...] OUT``: the HTML report (Allure 2's command line, offline);
- ``certify [--target SPEC] [--out DIR] [-- PYTEST ARGS]``: the certification profile, then all
  of the above for its run;
- ``compare A.json B.json``: the rule cases whose outcome changed, regressions first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports import coherency, matrices


def _split(parser: argparse.ArgumentParser, dirs: list[Path], command: str) -> tuple[list[Path], Path]:
    if len(dirs) < 2:
        parser.error(f"{command} needs RESULTS [RESULTS ...] OUT")
    return dirs[:-1], dirs[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    matrix = commands.add_parser("coherency", help="the cache-contract matrix: mode x target family")
    matrix.add_argument("--target", action="append", dest="families",
                        help=f"a family with cache modes ({', '.join(coherency.FAMILIES)}); repeatable; "
                             "default: all")
    matrix.add_argument("--out", type=Path, help="write coherency.md and coherency.json here")
    for name, what in (("matrices", "the coherency and ACL matrices of allure results"),
                       ("summary", "the certification summary of allure results"),
                       ("html", "the HTML report of allure results (Allure 2, offline)")):
        sub = commands.add_parser(name, help=what)
        sub.add_argument("dirs", nargs="+", type=Path, metavar="RESULTS",
                         help="allure results directories, then the output directory last")
    certify = commands.add_parser("certify", help="run the certification profile and write its reports")
    certify.add_argument("--target", default="ref", help="the target spec (default: %(default)s)")
    certify.add_argument("--out", type=Path, default=Path("fusecheck-certification"))
    certify.add_argument("--jobs", type=int, default=2, help="pytest-xdist workers (default: %(default)s)")
    certify.add_argument("pytest_args", nargs="*", help="after --: more pytest arguments")
    compare = commands.add_parser("compare", help="the rule cases that changed between two summaries")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "matrices":
        return matrices.main(*_split(parser, args.dirs, "matrices"))
    if args.command == "summary":
        from reports import summary

        results, out = _split(parser, args.dirs, "summary")
        written = summary.write(summary.build(results), out)
        print("written: " + ", ".join(map(str, written)))
        return 0
    if args.command == "html":
        from reports import html

        return html.main(*_split(parser, args.dirs, "html"))
    if args.command == "certify":
        from reports import certify as run

        return run.main(args.target, args.out, args.jobs, args.pytest_args)
    if args.command == "compare":
        from reports import compare as diff

        return diff.main(args.a, args.b)
    return coherency.main(args.families or list(coherency.FAMILIES), args.out)


if __name__ == "__main__":
    sys.exit(main())
