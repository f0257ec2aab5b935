"""Root pytest configuration: options, hypothesis profiles, outcome hooks, rule summary."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from collections.abc import Generator

import pytest

from conformance.profiles import PROFILES
from conformance.profiles import load as load_profiles

load_profiles()

DEFAULT_TARGET = "ref"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fusecheck")
    group.addoption("--target", default=os.environ.get("FUSECHECK_TARGET", DEFAULT_TARGET),
                    help="what to test: ref, hello_ll, passthrough_ll, squashfuse_ll, fuse-overlayfs, "
                         "bindfs, fuse2fs, squashfuse, mount:PATH, or exec:COMMAND with {fd} "
                         "(default: %(default)s)")
    group.addoption("--reply-timeout", type=float, default=5.0,
                    help="seconds to wait for each reply (default: %(default)s)")
    group.addoption("--op-timeout", type=float, default=60.0,
                    help="seconds a POSIX rule may take before the target's connection is aborted")
    group.addoption("--backing", default=None, metavar="DIR",
                    help="the host directory the target serves (mount:PATH, bindfs, passthrough_ll)")
    group.addoption("--cache-mode", default=None, metavar="MODE",
                    help="the cache mode the target runs in, for the coherency rules: "
                         "none|auto|always[,writeback] (ref and passthrough_ll say it themselves)")
    group.addoption("--findings", default="fusecheck-findings", metavar="DIR",
                    help="where a failing stateful example is saved as a pcap (default: %(default)s)")
    group.addoption("--profile", default=None, choices=PROFILES,
                    help="the hypothesis profile (examples drawn, seeds): certify for the certification "
                         "profile; default: $HYPOTHESIS_PROFILE, else ci under CI, else dev")
    group.addoption("--certify-out", default="fusecheck-certification", metavar="DIR",
                    help="with --profile certify: where the allure results (unless --alluredir), "
                         "junit.xml (unless --junitxml) and summary.json/.md go (default: %(default)s)")
    group.addoption("--rule", action="append", default=[], metavar="ID",
                    help="run only the rules whose id starts with ID (FUSE-INIT-004, FUSE-INIT); "
                         "repeatable")


@pytest.hookimpl(tryfirst=True)  # before allure's and junitxml's own, which read their paths
def pytest_configure(config: pytest.Config) -> None:
    global _started
    _started = time.monotonic()
    chosen = config.getoption("--profile")
    if chosen:  # xdist workers get the same option: every process draws the same way
        os.environ["HYPOTHESIS_PROFILE"] = chosen
        load_profiles()
    if chosen == "certify":
        _certification_paths(config)
    config.addinivalue_line("markers", "rule(id): the conformance rule a test checks")
    config.addinivalue_line("markers", "spread: a long test, put where another worker starts its own")
    config.addinivalue_line("markers", "alone: a timing goal; ./fusecheck selftest runs these after the "
                            "parallel run, one at a time, on an otherwise idle machine")
    _interrupt_on_sigterm()
    _private_mounts()


def _certification_paths(config: pytest.Config) -> None:
    """The certification profile writes allure results and JUnit XML, under --certify-out
    unless their own options say where; results of an earlier run there are removed first
    (by the controller, before xdist starts its workers)."""
    import shutil
    from pathlib import Path

    out = Path(config.getoption("--certify-out")).resolve()
    if not config.option.allure_report_dir:
        results = out / "allure-results"
        if not hasattr(config, "workerinput") and results.exists():
            shutil.rmtree(results)
        config.option.allure_report_dir = str(results)
    if not getattr(config.option, "xmlpath", None) and not hasattr(config, "workerinput"):
        out.mkdir(parents=True, exist_ok=True)
        config.option.xmlpath = str(out / "junit.xml")


def _private_mounts() -> None:
    """Every mount the run makes lives in this process's own mount namespace (slave of the
    host's), so it dies with the process however the process dies; a run that cannot keep
    its mounts from the host stops before it makes one, with a line saying why."""
    if os.geteuid() == 0:
        from targets import fusedev

        try:
            fusedev.enter_private_mount_namespace()
        except fusedev.NamespaceError as exc:
            raise pytest.UsageError(f"{exc.message}; {exc.hint}") from None


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a CI timeout, a kill) unwinds like Ctrl-C, so every fixture stops its daemon."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--rule ID``: keep only the tests of the rules whose id starts with ID; long tests marked
    ``spread`` go to both ends of the run, so that two xdist workers each start one."""
    _rules_only(config, items)
    spread = [item for item in items if item.get_closest_marker("spread")]
    if spread:
        rest = [item for item in items if not item.get_closest_marker("spread")]
        items[:] = spread[0::2] + rest + spread[1::2]


def _rules_only(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.getoption("--rule")
    if not wanted:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("rule")
        chosen = marker is not None and any(marker.args[0].startswith(w) for w in wanted)
        (keep if chosen else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (fixtures read ``rep_call``); tag the rule id."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    marker = item.get_closest_marker("rule")
    if marker and report.when == "setup":  # on the item too: every later report (and JUnit) has them
        from conformance.rules import RULES

        known = RULES.get(marker.args[0])
        props = [("rule", marker.args[0]), ("statement", known.statement if known else ""),
                 ("area", item.nodeid.split("/")[1] if "/" in item.nodeid else "")]
        item.user_properties.extend(props)
        report.user_properties.extend(props)
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if "rule" not in props or report.when not in ("setup", "call"):
        return
    outcome = "XFAIL" if hasattr(report, "wasxfail") and report.skipped else report.outcome.upper()
    if report.when == "setup" and report.failed:
        outcome = "ERROR"
    _results[report.nodeid] = (str(props["rule"]), outcome, str(props.get("statement", "")))
    _durations[str(props.get("area", ""))] += report.duration


_results: dict[str, tuple[str, str, str]] = {}
_durations: defaultdict[str, float] = defaultdict(float)
_started = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per rule: its outcome, id and statement."""
    if not _results:
        return
    target = terminalreporter.config.getoption("--target")
    terminalreporter.section(f"fusecheck rules against {target}")
    for nodeid, (rule_id, outcome, statement) in sorted(_results.items(),
                                                        key=lambda kv: (kv[1][0], kv[0])):
        param = nodeid.partition("[")[2].rstrip("]")
        suffix = f" [{param}]" if param else ""
        terminalreporter.write_line(f"{outcome:<7} {rule_id}{suffix}: {statement}")
    _print_timing(terminalreporter, target)


def _print_timing(terminalreporter: pytest.TerminalReporter, target: str) -> None:
    """The run's wall-clock time and each area's summed test time: the speed figure."""
    workers = getattr(terminalreporter.config.option, "numprocesses", None) or 1
    areas = ", ".join(f"{area or 'other'} {seconds:.1f} s" for area, seconds in sorted(_durations.items()))
    terminalreporter.write_line(
        f"time: {len(_results)} rule tests against {target} in {time.monotonic() - _started:.1f} s "
        f"wall clock on {workers} worker(s); test time by area: {areas}")


@pytest.fixture(autouse=True)
def _target_parameter(request: pytest.FixtureRequest) -> None:
    """Every result names the target it ran against and its version (allure parameters, out of
    the history id)."""
    import allure

    from targets.errors import TargetError
    from targets.spec import parse_spec
    from targets.versions import target_version

    target = request.config.getoption("--target")
    allure.dynamic.parameter("target", target, excluded=True)
    try:
        version = target_version(parse_spec(target))
    except (TargetError, ValueError):
        version = "unknown"
    allure.dynamic.parameter("target version", version, excluded=True)



@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A rule's allure description says its level and how to run it again on this target
    (set as the test starts: allure keeps what the decorator said until then)."""
    marker = item.get_closest_marker("rule")
    if marker is None:
        return
    import allure

    from conformance.rules import RULES

    known = RULES.get(marker.args[0])
    if known is not None:
        target = item.config.getoption("--target")
        again = f"pytest conformance --target '{target}' --rule {known.id}"
        allure.dynamic.description(f"{known.statement}\n\nSource: {known.source}\n\nLevel: {known.level}"
                                   f"\n\nRun it again: {again}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """With ``--alluredir``: the coherency and ACL matrices of the results there, as one result's
    attachments (built once, by the controller, after every worker has written its results)."""
    config = session.config
    directory = config.getoption("allure_report_dir", None)
    if not directory or hasattr(config, "workerinput"):
        return
    from pathlib import Path

    from conformance.profiles import profile
    from reports import environment
    from reports.matrices import attach_to_results

    if Path(directory).is_dir():
        attach_to_results(Path(directory))
        seed = config.getoption("hypothesis_seed", None)
        environment.write(Path(directory), environment.collect(
            config.getoption("--target"), profile(),
            str(seed) if seed is not None else _seeding(profile())))
        if profile() == "certify":
            from reports import summary

            written = summary.write(summary.build([Path(directory)]), Path(config.getoption("--certify-out")))
            session.config.pluginmanager.get_plugin("terminalreporter").write_line(  # type: ignore[union-attr]
                "certification summary: " + ", ".join(str(p) for p in written))


def _seeding(name: str) -> str:
    from hypothesis import settings

    chosen = settings.get_profile(name)
    if chosen.derandomize:
        return "derandomized: each test's seed comes from its code (a suite version draws the same examples)"
    return "random per test (pass --hypothesis-seed to fix it)"
