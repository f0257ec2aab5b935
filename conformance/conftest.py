"""Fixtures that open the ``--target`` and speak to it in the kernel's role.

Before the first test, the target is checked once (spec, installed, answers
INIT): a bad target ends the run with one line saying what to fix.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from conformance.deviations import deviation
from protocol.events import Reply
from reports.allure_support import attach_exchange
from targets.connection import KernelConnection
from targets.errors import TargetError
from targets.exec import ExecTarget
from targets.spec import TargetSpec, parse_spec

PREFLIGHT_TIMEOUT = 10.0


def _spec(config: pytest.Config) -> TargetSpec:
    return parse_spec(config.getoption("--target"))


def pytest_configure(config: pytest.Config) -> None:
    """Fail fast, in one line, on a target that cannot be used at all."""
    if hasattr(config, "workerinput") or config.option.collectonly or config.option.help:
        return  # the controller already checked
    text = config.getoption("--target")
    try:
        spec = parse_spec(text)
        with ExecTarget(spec) as target:
            conn = KernelConnection(target.channel, timeout=PREFLIGHT_TIMEOUT)
            reply = conn.init()
    except TargetError as exc:
        raise pytest.UsageError(f"fusecheck: cannot use --target {text!r}: {exc.message} "
                                f"(hint: {exc.hint})") from None
    if reply.error or conn.session.negotiated is None:
        raise pytest.UsageError(f"fusecheck: --target {text!r} refused FUSE_INIT (error "
                                f"{reply.error}); hint: run the daemon by hand with -d to read why")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Known daemon deviations become strict xfails naming the reason."""
    try:
        name = _spec(config).name
    except TargetError:
        return
    for item in items:
        marker = item.get_closest_marker("rule")
        param = getattr(getattr(item, "callspec", None), "id", "")
        if marker and (reason := deviation(name, marker.args[0], param)):
            item.add_marker(pytest.mark.xfail(reason=f"known {name} deviation: {reason}",
                                              strict=True))


@pytest.fixture
def target_spec(request: pytest.FixtureRequest) -> TargetSpec:
    return _spec(request.config)


@pytest.fixture
def target(request: pytest.FixtureRequest, target_spec: TargetSpec) -> Iterator[ExecTarget]:
    """A fresh daemon for this test; its exchange is attached to the report on failure."""
    with ExecTarget(target_spec) as opened:
        yield opened


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failed test, attach the exchange with its target to the test's allure result."""
    report = yield
    target = getattr(item, "funcargs", {}).get("target")
    if report.when == "call" and report.failed and isinstance(target, ExecTarget):
        attach_exchange(target.transcript, minor=getattr(item, "_fusecheck_minor", 45))
    return report


@pytest.fixture
def conn(request: pytest.FixtureRequest, target: ExecTarget) -> KernelConnection:
    """The kernel role on the target's channel, before INIT."""
    connection = KernelConnection(target.channel, timeout=request.config.getoption("--reply-timeout"))
    request.node._fusecheck_minor = connection.session.minor
    return connection


@pytest.fixture
def ready(request: pytest.FixtureRequest, conn: KernelConnection,
          target: ExecTarget) -> Iterator[KernelConnection]:
    """The kernel role after a successful INIT; the daemon must outlive the test."""
    reply: Reply = conn.init()
    assert reply.ok and conn.session.negotiated, f"INIT refused: error {reply.error}"
    request.node._fusecheck_minor = conn.session.negotiated.minor
    yield conn
    daemon = target.daemon
    if daemon is not None and not daemon.alive():
        pytest.fail(f"the daemon {daemon.exit_description()} during the test; stderr: "
                    f"{daemon.stderr_tail(500)!r}", pytrace=False)
