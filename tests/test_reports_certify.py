"""The certification profile end to end: ``python -m reports certify`` against the reference
server and against a mutant of it (a few rules of each area the matrices need, to keep it
short), ``compare`` showing the mutant's rule as a regression, and the HTML report opened in
headless Chromium: the suites, the failed rule with its attachment, both matrices and the
failure's cause are on its pages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reports import html
from targets.skip import require
from tests import chromium

REPO = Path(__file__).resolve().parent.parent
#: enough of each area for every part of the report: a wire rule the mutant fails (with its
#: exchange attached), a coherency rule and an ACL rule (the matrices)
RULES = ("FUSE-PROTO", "COHERENCY-HOST-001", "POSIX-ACL-001")
MUTANT = "ref:mutant=enosys-as-eio"  # FUSE-PROTO-005: an unknown opcode answered EIO
RUN_LIMIT = 600


def certify(target: str, out: Path) -> subprocess.CompletedProcess[str]:
    rules = [arg for rule in RULES for arg in ("--rule", rule)]
    return subprocess.run([sys.executable, "-m", "reports", "certify", "--target", target, "--out", str(out),
                           "--", *rules], cwd=REPO, capture_output=True, text=True, timeout=RUN_LIMIT,
                          check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    require(os.path.exists("/dev/fuse") and os.geteuid() == 0, "machine lacks /dev/fuse or root (mounts)")
    require(not html.missing(), f"the HTML report cannot be made: {html.missing()}")
    root = tmp_path_factory.mktemp("certify")
    made = {}
    for name, target in (("ref", "ref"), ("mutant", MUTANT)):
        out = root / name
        run = certify(target, out)
        # exit 0 for both: the mutant fails a should rule, not a required one
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        made[name] = out
    yield made
    shutil.rmtree(root, ignore_errors=True)


def test_certify_writes_the_summary_junit_and_html(runs: dict[str, Path]) -> None:
    out = runs["mutant"]
    data = json.loads((out / "summary.json").read_text())
    assert data["target"]["spec"] == MUTANT and data["environment"]["hypothesis.profile"] == "certify"
    assert data["environment"]["kernel.fuse"].startswith("7.")
    assert data["environment"]["hypothesis.examples"].startswith("100 per property test")
    assert data["areas"]["protocol"]["failed (optional)"] == 1  # FUSE-PROTO-005 is a should rule
    assert data["cases"]["FUSE-PROTO-005"]["outcome"] == "failed (optional)"
    assert {"coherency", "acl"} <= set(data["areas"])
    assert data["matrices"]["coherency"] and data["matrices"]["acl"]
    assert data["causes"][0]["cause"] == "answers EIO where ENOSYS is due"
    assert "## Per area" in (out / "summary.md").read_text()
    junit = (out / "junit.xml").read_text()
    assert 'failures="1"' in junit and "test_unknown_opcode" in junit
    report = (out / "html" / "index.html").read_text()
    assert not re.search(r"<script[^>]+src=[\"']https?:", report), "the report fetches a script"


def test_compare_shows_the_mutant_as_a_regression(runs: dict[str, Path]) -> None:
    run = subprocess.run([sys.executable, "-m", "reports", "compare", str(runs["ref"] / "summary.json"),
                          str(runs["mutant"] / "summary.json")], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    first = run.stdout.splitlines()[3]
    assert "regression" in first and "FUSE-PROTO-005" in first, run.stdout
    assert "passed -> failed (optional)" in first, run.stdout


def test_the_html_report_in_a_browser(runs: dict[str, Path]) -> None:
    require(chromium.chromium(), "machine lacks chromium (Debian's chromium package)")
    index = runs["mutant"] / "html" / "index.html"
    cases = chromium.leaves(chromium.embedded(index, "suites.json"))
    suites = chromium.page_text(f"file://{index}#suites")
    assert "conformance.protocol" in suites and "conformance.coherency" in suites, suites[:2000]
    failed = next(c for c in cases if c["status"] == "failed")
    page = chromium.page_text(f"file://{index}#testresult/{failed['uid']}")
    assert "FUSE-PROTO-005" in page and "Failed" in page and "exchange.pcap" in page, page[:3000]
    matrices = next(c for c in cases if c["name"] == "coherency and ACL matrices")
    page = chromium.page_text(f"file://{index}#testresult/{matrices['uid']}")
    assert "coherency matrix" in page and "acl matrix" in page, page[:3000]
    assert "chart: outcomes per area" in page and "chart: coherency staleness" in page, page[:3000]
    page = chromium.page_text(f"file://{index}#categories")
    assert "answers EIO where ENOSYS is due" in page, page[:3000]
