"""Fixtures that open the ``--target`` and speak to it in the kernel's role.

Before the first test, the target is checked once (spec, installed, answers
INIT): a bad target ends the run with one line saying what to fix.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from conformance.deviations import Deviation, deviation, failure_text
from protocol.errors import RemoteProtocolError
from protocol.events import Reply
from reports.allure_support import attach_exchange
from targets.capabilities import serves_wire
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.mounts import open_mount_target
from targets.spec import TargetSpec, is_cuse, parse_spec
from targets.wire import WireTarget, wire_target

DEVIATION = pytest.StashKey[Deviation]()


def _spec(config: pytest.Config) -> TargetSpec:
    return parse_spec(config.getoption("--target"))


def pytest_configure(config: pytest.Config) -> None:
    """Fail fast, in one line, on a target that cannot be used at all."""
    if hasattr(config, "workerinput") or config.option.collectonly or config.option.help:
        return  # the controller already checked
    text = config.getoption("--target")
    timeout = config.getoption("--reply-timeout")
    try:
        spec = parse_spec(text)
        if is_cuse(spec):
            _check_cuse(spec, timeout)
            return
        if not serves_wire(spec):
            _check_mount(config, spec)
            return
        with wire_target(spec) as target:
            conn = KernelConnection(target.channel, timeout=timeout)
            reply = conn.init()
    except (TargetError, RemoteProtocolError, AssertionError) as exc:
        what = getattr(exc, "message", None) or str(exc)
        hint = getattr(exc, "hint", None) or "run the daemon by hand with -d to read why"
        raise pytest.UsageError(f"fusecheck: cannot use --target {text!r}: {what} "
                                f"(hint: {hint})") from None
    if reply.error or conn.session.negotiated is None:
        problems = "; ".join(str(f) for f in reply.findings) or f"error {reply.error}"
        raise pytest.UsageError(f"fusecheck: --target {text!r} refused FUSE_INIT ({problems}); "
                                "hint: run the daemon by hand with -d to read why")


def _check_cuse(spec: TargetSpec, timeout: float) -> None:
    """A CUSE server: it must start behind the stand-in /dev/cuse and answer CUSE_INIT."""
    from targets.cuse.target import CuseTarget

    with CuseTarget(spec) as target:
        conn = KernelConnection(target.channel, timeout=timeout)
        data = conn.session.cuse_init()
        conn.wait(conn.session.last_unique, data)


def _check_mount(config: pytest.Config, spec: TargetSpec) -> None:
    """A mount-only target: mount it once (and unmount) so a broken one fails in one line."""
    backing = config.getoption("--backing")
    with open_mount_target(spec, Path(backing) if backing else None):
        pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Known deviations of the suite's named daemons become strict xfails naming the reason."""
    try:
        spec = _spec(config)
    except TargetError:
        return
    if spec.kind not in ("daemon", "virtiofsd"):
        return  # an exec: command is anybody's program, whatever its name
    for item in items:
        marker = item.get_closest_marker("rule")
        param = getattr(getattr(item, "callspec", None), "id", "")
        if marker and (known := deviation(spec.name, marker.args[0], param)):
            item.stash[DEVIATION] = known
            item.add_marker(pytest.mark.xfail(reason=f"known {spec.name} deviation: {known.reason}",
                                              strict=known.strict))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the exchange of a failed test; keep deviations to the failure they name;
    report a lost target in one line."""
    report = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, TargetError) and report.failed:
        exc = call.excinfo.value
        report.longrepr = f"{exc.message}\n  hint: {exc.hint}"
    known = item.stash.get(DEVIATION, None)
    if known is not None and report.when == "call" and hasattr(report, "wasxfail"):
        text = failure_text(call.excinfo.value) if call.excinfo is not None else ""
        if report.skipped and not known.expected_in(text):  # failed, but not as documented
            report.outcome = "failed"
            del report.wasxfail
    target = getattr(item, "funcargs", {}).get("target")
    if report.when in ("setup", "call") and report.failed and isinstance(target, WireTarget):
        attach_exchange(target.transcript, minor=getattr(item, "_fusecheck_minor", 45))
    return report


@pytest.fixture
def target_spec(request: pytest.FixtureRequest) -> TargetSpec:
    return _spec(request.config)


@pytest.fixture
def target(target_spec: TargetSpec) -> Iterator[WireTarget]:
    """A fresh daemon for this test, stopped and reaped after it."""
    if not serves_wire(target_spec):
        pytest.skip(f"not applicable: {target_spec.text} is used through a mount, the suite "
                    "cannot speak to it over a socket")
    with wire_target(target_spec) as opened:
        yield opened


@pytest.fixture
def conn(request: pytest.FixtureRequest, target: WireTarget) -> KernelConnection:
    """The kernel role on the target's channel, before INIT."""
    connection = KernelConnection(target.channel, timeout=request.config.getoption("--reply-timeout"))
    request.node._fusecheck_minor = connection.session.minor
    return connection


@pytest.fixture
def ready(request: pytest.FixtureRequest, conn: KernelConnection,
          target: WireTarget) -> Iterator[KernelConnection]:
    """The kernel role after a successful INIT; the daemon must outlive the test."""
    reply: Reply = conn.init()
    assert reply.ok and conn.session.negotiated, f"INIT refused: error {reply.error}"
    request.node._fusecheck_minor = conn.session.negotiated.minor
    yield conn
    call = getattr(request.node, "rep_call", None)
    daemon = target.daemon
    if call is not None and call.passed and daemon is not None and not daemon.alive():
        pytest.fail(f"the daemon {daemon.exit_description()} during the test; stderr: "
                    f"{daemon.stderr_tail(500)!r}", pytrace=False)
