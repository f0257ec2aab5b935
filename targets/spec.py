"""Parse a ``--target`` spec string into a TargetSpec.

Forms: ``exec:COMMAND`` (COMMAND holds ``{fd}``), a registry name with
optional ``:key=val,flag`` options, and the reserved ``ref``, ``mount:PATH``,
``vhost-user:SOCKET``, ``virtiofsd[:opts]``, ``cuse:CMD``.
"""

from __future__ import annotations

import difflib
import os
import shlex
from dataclasses import dataclass, field

from targets.daemons import FD_PLACEHOLDER, MOUNT_NAMES, REGISTRY
from targets.errors import TargetSpecError

EXEC_EXAMPLE = "exec:.build/bin/passthrough_ll -f -o source=/tmp /dev/fd/{fd}"
#: Reserved kinds -> the argument after their colon (None: optional options).
RESERVED: dict[str, str | None] = {
    "vhost-user": "SOCKET",
    "virtiofsd": None,
    "cuse": "CMD",
    "cuse-example": None,
}
#: The reserved kinds this version opens
SUPPORTED_RESERVED = ("virtiofsd", "vhost-user", "cuse", "cuse-example")
REF_VHOST_USER = "vhost-user"  # the ref option that makes it a vhost-user back-end


@dataclass(frozen=True)
class TargetSpec:
    """``kind`` is "exec", "daemon" (a registry name) or a reserved kind."""

    kind: str
    name: str
    command: tuple[str, ...] = ()
    options: dict[str, str | bool] = field(default_factory=dict)
    text: str = ""


def is_vhost_user(spec: TargetSpec) -> bool:
    """``spec`` names a virtio-fs device behind a vhost-user socket."""
    return spec.kind in ("virtiofsd", "vhost-user") or (
        spec.kind == "daemon" and spec.name == "ref" and bool(spec.options.get(REF_VHOST_USER)))


REF_CUSE = "cuse"  # the ref option that makes it a CUSE server (a FIFO device)


def is_cuse(spec: TargetSpec) -> bool:
    """``spec`` names a CUSE server (a character device), not a filesystem."""
    return spec.kind in ("cuse", "cuse-example") or (
        spec.kind == "daemon" and spec.name == "ref" and bool(spec.options.get(REF_CUSE)))


def known_forms() -> str:
    names = ", ".join(REGISTRY)
    reserved = ", ".join(k if v is None else f"{k}:{v}" for k, v in RESERVED.items())
    return f"exec:COMMAND, {names} (reserved: {reserved})"


def parse_options(text: str, *, spec: str) -> dict[str, str | bool]:
    """``key=val,flag`` -> {"key": "val", "flag": True}."""
    options: dict[str, str | bool] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not key or (eq and not value):
            raise TargetSpecError(
                f"bad option {item!r} in target spec {spec!r}",
                hint="options are key=value or flag, separated by commas",
            )
        options[key] = value if eq else True
    return options


def _parse_exec(command: str, text: str) -> TargetSpec:
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise TargetSpecError(
            f"cannot split exec command {command!r}: {exc}", hint=f"e.g. {EXEC_EXAMPLE}"
        ) from None
    if not argv:
        raise TargetSpecError("exec: needs a command", hint=f"e.g. {EXEC_EXAMPLE}")
    if not any(FD_PLACEHOLDER in word for word in argv):
        raise TargetSpecError(
            f"exec command has no {FD_PLACEHOLDER} placeholder for the channel fd",
            hint=f"give the daemon /dev/fd/{FD_PLACEHOLDER}, e.g. {EXEC_EXAMPLE}",
        )
    return TargetSpec("exec", os.path.basename(argv[0]), argv, {}, text)


def _parse_reserved(kind: str, rest: str | None, text: str) -> TargetSpec:
    argument = RESERVED[kind]
    if argument is None:
        return TargetSpec(kind, kind, (), parse_options(rest or "", spec=text), text)
    if not rest:
        raise TargetSpecError(f"target {kind} needs {kind}:{argument}", hint=f"write {kind}:{argument}")
    try:
        command = tuple(shlex.split(rest)) if kind == "cuse" else (rest,)
    except ValueError as exc:
        raise TargetSpecError(f"cannot split {kind} command {rest!r}: {exc}") from None
    return TargetSpec(kind, kind, command, {}, text)


def parse_spec(text: str, *, allow_reserved: bool = False) -> TargetSpec:
    """Parse ``text``; reserved kinds are refused unless ``allow_reserved``."""
    spec = text.strip()
    if not spec:
        raise TargetSpecError("empty target spec", hint=f"use one of: {known_forms()}")
    head, colon, rest = spec.partition(":")
    if head == "exec":
        return _parse_exec(rest, spec)
    if head == "mount":
        return _parse_mount(rest, spec)
    if head in REGISTRY or head in _mount_names():
        return TargetSpec("daemon", head, (), parse_options(rest, spec=spec), spec)
    if head in RESERVED:
        parsed = _parse_reserved(head, rest if colon else None, spec)
        if not allow_reserved and head not in SUPPORTED_RESERVED:
            raise TargetSpecError(
                f"target kind {head!r} is not yet supported by this version",
                hint=f"supported now: {supported()}",
            )
        return parsed
    close = difflib.get_close_matches(head, [*_all_names(), *RESERVED, "exec", "mount"], n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise TargetSpecError(f"unknown target {head!r}",
                          hint=f"{guess}supported now: {supported()}")


def _mount_names() -> list[str]:
    return list(MOUNT_NAMES)


def _all_names() -> list[str]:
    return list(dict.fromkeys([*REGISTRY, *_mount_names()]))


def supported() -> str:
    """The spec forms this version takes, for messages."""
    return (f"exec:COMMAND, mount:PATH, {', '.join(_all_names())}, virtiofsd[:opts], ref:vhost-user, "
            "vhost-user:SOCKET, cuse:COMMAND, cuse-example, ref:cuse")


def _parse_mount(rest: str, text: str) -> TargetSpec:
    if not rest.strip():
        raise TargetSpecError("mount: needs the path of a mounted filesystem",
                              hint="e.g. mount:/mnt/myfs (mount it first)")
    return TargetSpec("mount", "mount", (rest.strip(),), {}, text)
