"""``python -m reports html RESULTS [RESULTS ...] OUT``: the HTML report of allure results,
made offline (no analytics sent, no script fetched) by the Allure 2 command line (npm's
``allure-commandline``, which the set-up installs under ``.build/allure``, run on the
machine's Java) as one self-contained ``OUT/index.html`` that a browser opens from disk.

Before it is made, the results get what the report shows beyond the tests: the failures
grouped by probable cause as allure categories (``categories.json``, from
``reports.causes``), and the coherency and ACL matrices with their charts as one result's
attachments (``reports.matrices``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from reports import causes, matrices
from reports.outcomes import read

REPO = Path(__file__).resolve().parent.parent
LOCAL_ALLURE = REPO / ".build" / "allure" / "node_modules" / ".bin" / "allure"
ALLURE_PACKAGE = "allure-commandline@2.46.1"
GENERATE_LIMIT = 600  # seconds
#: Allure 2 sends usage analytics when it generates, and puts Google's tag script in the
#: report, unless told not to (its ReportWebGenerator reads this as a boolean)
OFFLINE = {"ALLURE_NO_ANALYTICS": "true"}


def allure_command() -> str | None:
    if os.access(LOCAL_ALLURE, os.X_OK):
        return str(LOCAL_ALLURE)
    return shutil.which("allure")


def missing() -> str:
    """Why no report can be made here, or "" when it can."""
    if allure_command() is None:
        return (f"no Allure command line: ./fusecheck setup installs {ALLURE_PACKAGE} from npm "
                f"into {LOCAL_ALLURE.parent.parent.parent}")
    if shutil.which("java") is None:
        return "the Allure 2 command line needs Java (apt-get install default-jre-headless)"
    return ""


def categories(results: list[Path]) -> list[dict[str, object]]:
    """Allure categories, one per probable cause: each matches its failures' messages exactly
    (the report files a failure under the first category that matches)."""
    found: list[dict[str, object]] = []
    for group in causes.group(read(results)):
        messages = sorted({f.message for f in group.failures if f.message})
        if messages:
            found.append({"name": group.cause, "matchedStatuses": ["failed", "broken"],
                          "messageRegex": "|".join(_java_literal(m) for m in messages)})
    return found


def _java_literal(text: str) -> str:
    r"""``text`` as a Java regex that matches it alone (\Q...\E, with \E inside split out)."""
    return r"\Q" + text.replace(r"\E", r"\E\\E\Q") + r"\E"


def prepare(results: list[Path]) -> None:
    """Write the categories and the matrices into each results directory."""
    found = categories(results)
    for directory in results:
        (directory / "categories.json").write_text(json.dumps(found, indent=1))
        matrices.attach_to_results(directory)


def generate(results: list[Path], out: Path) -> Path | None:
    """The report at ``out/index.html``; None when the Allure command line is missing."""
    command = allure_command()
    if missing() or command is None:
        return None
    prepare(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([command, "generate", *map(str, results), "-o", str(out), "--clean",
                          "--single-file"], capture_output=True, text=True, timeout=GENERATE_LIMIT,
                         check=False, env={**os.environ, **OFFLINE})
    index = out / "index.html"
    if run.returncode != 0 or not index.exists():
        said = re.sub(r"\s+", " ", run.stdout + run.stderr)[-1000:]
        raise RuntimeError(f"allure generate failed (exit {run.returncode}): {said}")
    return index


def main(results: list[Path], out: Path) -> int:
    absent = [d for d in results if not d.is_dir()]
    if absent:
        print(f"not a directory of allure results: {', '.join(map(str, absent))}")
        return 2
    why = missing()
    if why:
        print(f"cannot make the HTML report: {why}")
        return 2
    index = generate(results, out)
    print(f"written: {index} (open it in a browser; it needs no server)")
    return 0
