"""Run a campaign until a deadline: batches of hypothesis examples, each batch with a seed
of its own, on one target instance reused while it stays healthy.

A batch that fails has found something: hypothesis has shrunk it and ran the smallest
example last, so the stage's trail is the reproducer. The runner keeps one finding per
signature (``fuzz.findings``), opens a fresh target and goes on; later batches skip the
database (``Phase.reuse``) so a known finding does not stop the campaign again. The first
batch does reuse it: a finding saved by any campaign sharing the database replays at once.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, reject, reporting, settings
from hypothesis import settings as Settings
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Flaky, Unsatisfiable
from hypothesis.internal.conjecture import engine
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test

from fuzz import verdict
from fuzz.findings import Finding, keep
from fuzz.reproducer import Exchange
from fuzz.stage import Campaign, Stage
from fuzz.stats import Tally
from fuzz.verdict import Defect
from targets.errors import TargetError
from targets.spec import TargetSpec
from targets.versions import target_version

SPARE_WAIT = 60.0  # seconds to wait for a spare instance to come up
SPARES = 2  # instances started ahead (a shrinking crash or hang restarts the target each time)
CLOSE_GRACE = 0.2  # seconds a target may take to exit by itself when its stage closes


class Recorded(ExampleDatabase):
    """A database that remembers the last entry saved (the failing example's choices)."""

    def __init__(self, inner: ExampleDatabase) -> None:
        super().__init__()
        self.inner = inner
        self.last: tuple[bytes, bytes] | None = None
        self.saves = 0  # entries saved under the primary key (one per new smallest failure)

    def save(self, key: bytes, value: bytes) -> None:
        if not key.endswith((b".secondary", b".pareto")):
            self.last = (key, value)
            self.saves += 1
        self.inner.save(key, value)

    def fetch(self, key: bytes) -> Any:
        return self.inner.fetch(key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(src, dest, value)


@dataclass(frozen=True)
class Shortest:
    signature: str  # the defect's
    trail: list[Exchange]  # what the example sent (and got)
    entry: tuple[bytes, bytes] | None  # its database key and choices, when saved


@contextmanager
def shrinking_for(seconds: float) -> Iterator[None]:
    """Hypothesis shrinks a failing example for at most ``seconds`` (its own limit is five
    minutes), then keeps the smallest failing one so far and runs it once more, as after a
    shrink that is done. A hang costs a deadline per attempt: its shrinking stops at this
    budget, not at the campaign's end. Hypothesis's warning about it is not shown."""
    saved = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = max(1, int(seconds))
    try:
        with reporting.with_reporter(_without_slow_shrinking_warning):
            yield
    finally:
        engine.MAX_SHRINKING_SECONDS = saved


def _without_slow_shrinking_warning(message: object) -> None:
    if "working to shrink" not in str(message):
        reporting.default(message)


def _close(stage: Stage) -> None:
    try:
        stage.close()
    except TargetError:
        pass


def _minor(stage: Stage) -> str:
    negotiated = getattr(getattr(stage.conn, "session", None), "negotiated", None)
    return f"FUSE 7.{negotiated.minor}" if negotiated is not None else "FUSE ?"


@dataclass
class Runner:
    campaign: Campaign
    spec: TargetSpec
    tally: Tally
    findings_dir: Path
    database: ExampleDatabase | None = None
    deadline: float = 2.0  # seconds per reply
    steps: int = 25  # steps per example
    batch: int = 50  # examples per seed
    kept: dict[str, Path] = field(default_factory=dict)  # signature -> finding directory
    errors: list[str] = field(default_factory=list)  # the suite's own failures (harness errors)
    on_finding: Callable[[Finding, Path], None] | None = None
    stop_after: int | None = None  # findings after which the campaign ends (None: run on)
    stage: Stage | None = None
    _defects_seen: int = 0
    shrink_grace: float = 60.0  # seconds a finding may shrink (also past the campaign's end)
    _started: float = field(default_factory=time.monotonic)
    _end: float = float("inf")
    _starting: deque[Future[Stage]] = field(default_factory=deque)  # spare instances coming up
    failed_trail: list[Exchange] = field(default_factory=list)
    shortest: dict[str, Shortest] = field(default_factory=dict)  # per signature, this batch's
    # failing example with the fewest messages
    _recorded: Recorded | None = None
    _saves_seen: int = 0
    _starter: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(SPARES, "fuzz-spare"))
    _closers: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "fuzz-close"))
    _closing: list[Future[None]] = field(default_factory=list)
    _batch_defects: int = 0
    _first_failure: int | None = None  # examples run until the first failing one of this batch
    version: str = ""

    # -- the stage --------------------------------------------------------------
    def ready(self) -> Stage:
        """The stage for the next example: reopened after a defect or when unfit."""
        failed = Defect.made != self._defects_seen
        self._defects_seen = Defect.made
        if failed and self._first_failure is None and Defect.made > self._batch_defects:  # this batch's first
            self._first_failure = self.tally.examples
        if failed and self.stage is not None:  # what the failing example sent, for a flaky end
            self.failed_trail = [m for m in (self.stage.init, *self.stage.trail) if m is not None]
            self._weigh(self.failed_trail)
        if self.stage is not None and (failed or not self.campaign.healthy(self.stage)):
            self.close(background=True)  # a hung target takes its grace to die: not our time
            self.tally.restarts += 1
        if self.stage is None:
            self.stage = self._take_spare()
            if not self.version:
                self.version = f"{target_version(self.spec)}; {_minor(self.stage)}"
        self.stage.trail.clear()
        self.tally.examples += 1
        self.tally.flush()
        return self.stage

    def _weigh(self, trail: list[Exchange]) -> None:
        """Keep ``trail`` aside if it is the batch's shortest failure of its kind. Hypothesis
        orders examples by their choices, not by what they send: a "smaller" one may hold a
        burst of hundreds, and a shrink cut short by its budget ends wherever it stood. With a
        database only a failure hypothesis kept (it saved its choices just now) counts, so the
        finding's entry replays exactly this trail; the last entry saved may be another
        failure's (hypothesis keeps one per place the failure is raised from)."""
        recorded, entry = self._recorded, None
        if recorded is not None:
            if recorded.saves == self._saves_seen:
                return
            self._saves_seen, entry = recorded.saves, recorded.last
        if not verdict.RAISED:
            return
        signature = verdict.RAISED[-1].signature
        kept = self.shortest.get(signature)
        if kept is None or len(trail) <= len(kept.trail):  # a tie: the later, hypothesis's smaller
            self.shortest[signature] = Shortest(signature, list(trail), entry)

    def _open(self) -> Stage:
        return self.campaign.open(self.spec, self.deadline, self.tally)

    def _take_spare(self) -> Stage:
        """The oldest of the instances started in the background while the last ones served
        (a shrinking example restarts the target again and again: this hides the start-up;
        two starting side by side keep up with a Python target's), and a new spare starts."""
        stage: Stage | None = None
        if self._starting:
            try:
                stage = self._starting.popleft().result(timeout=SPARE_WAIT)
            except Exception:  # it did not come up: start one in the foreground, which says why
                stage = None
        if stage is None:
            stage = self._open()
        while len(self._starting) < SPARES:
            self._starting.append(self._starter.submit(self._open))
        return stage

    def machine(self) -> RuleBasedStateMachine:
        """The next example's machine; past the campaign's end none (hypothesis counts the
        example as rejected and ends the batch), unless a batch that failed is still
        shrinking, which gets ``shrink_grace`` more."""
        shrinking = Defect.made > self._batch_defects
        if time.monotonic() > self._end + (self.shrink_grace if shrinking else 0.0):
            reject()
        return self.campaign.machine(self.ready())

    def close(self, *, background: bool = False) -> None:
        stage, self.stage = self.stage, None
        if stage is None:
            return
        if hasattr(stage.target, "grace"):  # no time for a clean exit: the next one waits
            stage.target.grace = min(stage.target.grace, CLOSE_GRACE)
        if background:
            self._closing.append(self._closers.submit(_close, stage))
        else:
            _close(stage)

    # -- batches ----------------------------------------------------------------
    def settings(self, first: bool) -> Settings:
        phases = [Phase.explicit, Phase.generate, Phase.shrink]
        if first:
            phases.insert(1, Phase.reuse)
        self._recorded = Recorded(self.database) if self.database is not None else None
        self._saves_seen, self.shortest = 0, {}
        return settings(max_examples=self.batch, stateful_step_count=self.steps, deadline=None,
                        database=self._recorded,
                        phases=phases, derandomize=False, report_multiple_bugs=False,
                        suppress_health_check=list(HealthCheck))

    def test(self, chosen: Settings) -> Any:
        """The state machine as hypothesis runs it, under a database key of its own (a seeded
        test has none by default, and every campaign's factory has the same source)."""
        test: Any = get_state_machine_test(self.machine, settings=chosen)  # type: ignore[arg-type]
        test._hypothesis_internal_database_key = b"fusecheck-fuzz:" + self.campaign.name.encode()
        return test

    def run_batch(self, seed: int, *, first: bool) -> Finding | None:
        chosen = self.settings(first)
        test = self.test(chosen)
        test._hypothesis_internal_use_seed = seed  # as @seed does, but keeping the database
        before = self._batch_defects = Defect.made
        self._first_failure = None
        try:
            with shrinking_for(self.shrink_grace):
                test()
        except Unsatisfiable:  # the campaign's end came before the batch's first example
            return None
        except Defect as defect:
            return self.record(defect, seed, chosen.database)
        except Flaky:
            earliest = next((d for d in verdict.RAISED if d.number > before), None)
            if earliest is not None:  # it failed once, then not again: keep the first
                return self.record(earliest, seed, chosen.database, flaky=True)
            self.tally.flaky += 1  # the target answered one sequence two ways: not a finding
            self.close()
        except TargetError as exc:  # the target cannot even be started: the campaign cannot go on
            raise exc
        finally:
            self.tally.flush(force=True)
        return None

    def record(self, defect: Defect, seed: int, database: Any, *, flaky: bool = False) -> Finding | None:
        stage = self.stage
        if flaky or defect.number != Defect.made or stage is None:  # the final run passed
            exchanges = list(self.failed_trail)
        else:
            exchanges = [m for m in (stage.init, *stage.trail) if m is not None]
        saved = getattr(database, "last", None)
        shortest = self.shortest.get(defect.signature)
        if shortest is not None:  # never longer than the final run: that one was weighed too
            exchanges, saved = shortest.trail, shortest.entry or saved
        stderr = stage.extra["watch"].stderr(20_000) if stage is not None and "watch" in stage.extra else ""
        self.close()  # the next batch starts on a fresh instance
        if defect.signature in self.kept:
            return None
        finding = Finding.of(defect, target=self.spec.text, version=self.version,
                             campaign=self.campaign.name, seed=seed)
        finding.after_seconds = round(time.monotonic() - self._started, 2)
        finding.after_examples = self._first_failure or self.tally.examples
        finding.flaky = flaky
        if flaky:
            finding.explanation += ("\n(hypothesis could not make it fail again on the same "
                                    "sequence: it depends on timing or on earlier examples)")
        if saved is not None:
            finding.database_key, finding.database_entry = saved[0].hex(), saved[1].hex()
            if self.database is not None and saved != getattr(database, "last", None):
                self.database.save(*saved)  # hypothesis moved it aside for a "smaller" one: the
                # shared database holds the finding's own entry, so it replays everywhere
        directory = keep(self.findings_dir, finding, exchanges, stderr)
        self.kept[defect.signature] = directory
        self.tally.findings += 1
        self.tally.flush(force=True)
        if self.on_finding is not None:
            self.on_finding(finding, directory)
        return finding

    def run(self, seconds: float, *, seed: int | None = None, max_batches: int | None = None) -> None:
        """Batches until ``seconds`` have passed (or ``max_batches`` ran)."""
        self._started = time.monotonic()
        end = self._end = self._started + seconds
        draw = random.Random(seed)
        batches = 0
        try:
            while time.monotonic() < end and (max_batches is None or batches < max_batches):
                if self.stop_after is not None and len(self.kept) >= self.stop_after:
                    break
                self.run_batch(draw.getrandbits(64), first=batches == 0)
                batches += 1
        finally:
            self.close()
            self.close_spare()
            self._closers.shutdown(wait=True)
            for closing in self._closing:  # what a background close raised, now
                closing.result()
            self.tally.flush(force=True)

    def close_spare(self) -> None:
        while self._starting:
            try:
                self._starting.popleft().result(timeout=SPARE_WAIT).close()
            except Exception:
                pass
        self._starter.shutdown(wait=True)
