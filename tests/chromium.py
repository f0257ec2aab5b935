"""Headless Chromium for the report's browser self-test: a page's text after its scripts ran
(``--dump-dom`` with a virtual time budget), and the data a single-file allure report
carries."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

#: Chromium as root on a closed network: no sandbox, no GPU, nothing fetched in the background
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PAGE_LIMIT = 90  # seconds for one page


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def page_text(url: str, budget_ms: int = 20_000) -> str:
    """The visible text of ``url`` once its scripts have had ``budget_ms`` of virtual time."""
    binary = chromium()
    assert binary, "no chromium"
    with tempfile.TemporaryDirectory(prefix="fusecheck-chromium-") as profile:
        dom = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}",
                              f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=PAGE_LIMIT, check=True).stdout
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def embedded(index: Path, name: str) -> Any:
    """``data/NAME`` as the single-file report holds it (base64 JSON)."""
    found = re.search(rf"d\('data/{re.escape(name)}','([^']*)'\)", index.read_text())
    assert found, f"{name} is not in {index}"
    return json.loads(base64.b64decode(found.group(1)))


def leaves(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The test cases of a suites/behaviors tree."""
    out: list[dict[str, Any]] = []
    for child in tree.get("children", []):
        out += leaves(child) if "children" in child else [child]
    return out
