"""``python -m reports certify --target SPEC [--out DIR]``: the certification profile.

Runs every conformance rule that applies to the target (``pytest conformance --profile
certify``: fixed seeds and example counts, no example database), with allure results and
JUnit XML under ``DIR``, then the summary (``summary.json``, ``summary.md``) and, when the
Allure command line is installed, the HTML report (``DIR/html``). It opens nothing.
Exit 0 when no required rule failed, 1 when one did, 2 when the run itself broke.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_LIMIT = 3 * 3600  # seconds the whole run may take (each rule has its own timeouts)


def pytest_argv(target: str, out: Path, jobs: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", str(REPO / "conformance"), "-q", "-p", "no:cacheprovider",
            "--target", target, "--profile", "certify", "--certify-out", str(out),
            "-n", str(jobs), *extra]


def main(target: str, out: Path, jobs: int, extra: list[str]) -> int:
    out = out.resolve()
    argv = pytest_argv(target, out, jobs, extra)
    print("running: " + " ".join(argv[1:]), flush=True)
    try:
        run = subprocess.run(argv, cwd=REPO, timeout=RUN_LIMIT, check=False)
    except subprocess.TimeoutExpired:
        print(f"the certification run took more than {RUN_LIMIT} s and was stopped")
        return 2
    summary_path = out / "summary.json"
    if run.returncode not in (0, 1) or not summary_path.exists():
        print(f"the run broke (pytest exit {run.returncode}); no summary")
        return 2
    summary = json.loads(summary_path.read_text())
    from reports import html

    written = html.generate([out / "allure-results"], out / "html")
    print(f"summary: {summary_path}, {out / 'summary.md'}; JUnit XML: {out / 'junit.xml'}; "
          f"allure results: {out / 'allure-results'}")
    print(f"HTML report: {written}" if written else f"HTML report: not written ({html.missing()})")
    totals = ", ".join(f"{name} {count}" for name, count in summary["totals"].items() if count)
    print(f"{summary['target']['spec']}: {totals}; outcomes hash {summary['hash'][:16]}")
    for group in summary["causes"][:10]:
        print(f"  {group['cause']}: {len(group['rules'])} rule(s), e.g. {group['example']['case']}")
    return 0 if summary["certified"] else 1
