"""Random ACLs, owners, chmods and callers: the target decides access as tmpfs does.

Each example makes a fresh file or directory in both trees, gives it a random valid access
ACL (named users and groups, with or without a mask), maybe a chmod after it, and then asks
as a random user with random primary and supplementary groups what it may do.  The mode,
the ACL read back and the rights must agree.  The profile in force sets the number of
examples (``ACL_RANDOM_EXAMPLES`` in ``conformance/profiles.py``: 300 by default).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import allure
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.acl.access import ALICE, AUDIT, BOB, CAROL, DAVE, NOGROUP, STAFF, TEAM, same_rights
from conformance.acl.setup import make
from conformance.acl.xattr import GROUP, GROUP_OBJ, MASK, OTHER, USER, USER_OBJ, Entry, get_acl, set_acl
from conformance.posix.oracle import Twin, stat_view
from conformance.profiles import ACL_RANDOM_EXAMPLES, stateful_settings
from conformance.rules import rule
from reports.matrices import ACL_DECISIONS

AREA = "acl"
SOURCE = ("fusecheck DESIGN (POSIX ACLs: random ACLs, users, groups and operations, the same access "
          "decision on both); Linux acl(5); kernel fs/posix_acl.c")
USERS = (ALICE, BOB, CAROL, DAVE)
GROUPS = (STAFF, TEAM, AUDIT)
PERMS = st.integers(0, 7)
_names = itertools.count()
#: the profile's own suppressions, kept
_SUPPRESSED = settings.default.suppress_health_check if settings.default else ()


@dataclass(frozen=True)
class Scenario:
    entries: tuple[Entry, ...]
    owner: int
    group: int
    chmod: int | None
    directory: bool
    uid: int
    gid: int
    groups: tuple[int, ...]

    def __str__(self) -> str:
        what = "directory" if self.directory else "file"
        then = f", then chmod {self.chmod:o}" if self.chmod is not None else ""
        return (f"a {what} of {self.owner}:{self.group} with {','.join(map(str, self.entries))}{then}; "
                f"asked by uid {self.uid} gid {self.gid} groups {self.groups}")


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    users = sorted(draw(st.lists(st.sampled_from(USERS), unique=True, max_size=3)))
    groups = sorted(draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=2)))
    entries = [Entry(USER_OBJ, draw(PERMS)), *(Entry(USER, draw(PERMS), u) for u in users),
               Entry(GROUP_OBJ, draw(PERMS)), *(Entry(GROUP, draw(PERMS), g) for g in groups)]
    if bool(users or groups) or draw(st.booleans()):  # a mask is needed with named entries
        entries.append(Entry(MASK, draw(PERMS)))
    entries.append(Entry(OTHER, draw(PERMS)))
    return Scenario(
        entries=tuple(entries), owner=draw(st.sampled_from((ALICE, BOB))),
        group=draw(st.sampled_from(GROUPS)), chmod=draw(st.none() | st.integers(0, 0o777)),
        directory=draw(st.booleans()), uid=draw(st.sampled_from(USERS)),
        gid=draw(st.sampled_from((*GROUPS, NOGROUP))),
        groups=tuple(draw(st.lists(st.sampled_from(GROUPS), unique=True, max_size=2))))


def _apply(root: Path, name: str, case: Scenario) -> tuple[int, str]:
    make(root, name, owner=case.owner, group=case.group, mode=0o600, directory=case.directory)
    set_acl(root / name, case.entries)
    if case.chmod is not None:
        os.chmod(root / name, case.chmod)
    try:
        acl_now = get_acl(root / name)
    except OSError as exc:
        acl_now = os.strerror(exc.errno or 0)
    return stat_view(os.stat(root / name))["mode"], acl_now


def deciding(case: Scenario) -> str:
    """The entry kind that decides the caller's access (acl(5) ACCESS CHECK ALGORITHM), and
    whether a mask limits it."""
    masked = " + mask" if any(e.tag == MASK for e in case.entries) else ""
    if case.uid == case.owner:
        return "owner"
    if any(e.tag == USER and e.id == case.uid for e in case.entries):
        return f"named user{masked}"
    mine = {case.gid, *case.groups}
    if case.group in mine:
        return f"owning group{masked}"
    if any(e.tag == GROUP and e.id in mine for e in case.entries):
        return f"named group{masked}"
    return "other"


@rule("POSIX-ACL-014", "For random ACLs, chmods, users and groups the mode, the ACL read back and the "
      "access decision are those of tmpfs", source=SOURCE, area=AREA, feature="random ACLs",
      level="must")  # the kernel decides by the ACL (POSIX.1e, acl(5)): tmpfs is its oracle
def test_random_acls(acl_twin: Twin) -> None:
    """The profile's ACL_RANDOM_EXAMPLES examples; how many matched, per deciding entry kind, go
    to allure (the ACL matrix's rows)."""
    twin = acl_twin
    tally: dict[str, dict[str, int | str]] = {}

    @settings(stateful_settings(ACL_RANDOM_EXAMPLES), suppress_health_check=[*_SUPPRESSED])
    @given(case=scenarios())
    def example(case: Scenario) -> None:
        twin.kick()
        name = f"n{next(_names)}"
        counts = tally.setdefault(deciding(case), {"examples": 0, "matched": 0, "differed": ""})
        counts["examples"] = int(counts["examples"]) + 1
        try:
            twin.same(lambda r: _apply(r, name, case), f"{case}: mode and ACL")
            same_rights(twin, str(case), case.uid, name, gid=case.gid, groups=case.groups)
        except AssertionError as exc:
            counts["differed"] = str(exc).splitlines()[0][:200]
            raise
        counts["matched"] = int(counts["matched"]) + 1

    try:
        example()
    finally:
        allure.attach(json.dumps(tally, indent=2, sort_keys=True), name=ACL_DECISIONS,
                      attachment_type=allure.attachment_type.JSON)
