"""--target spec parsing: the forms that parse, and one-line errors with hints."""

from __future__ import annotations

import pytest

from targets.daemons import REGISTRY
from targets.errors import TargetSpecError
from targets.spec import TargetSpec, is_cuse, parse_spec


def test_exec_spec_splits_like_a_shell() -> None:
    spec = parse_spec("exec:passthrough_ll -f -o source=/tmp /dev/fd/{fd}")
    assert spec == TargetSpec(
        "exec",
        "passthrough_ll",
        ("passthrough_ll", "-f", "-o", "source=/tmp", "/dev/fd/{fd}"),
        {},
        "exec:passthrough_ll -f -o source=/tmp /dev/fd/{fd}",
    )


def test_exec_spec_keeps_quoted_words_and_fd_inside_a_word() -> None:
    spec = parse_spec("  exec:'/opt/my daemon' --fd={fd} -o 'a b'  ")
    assert spec.command == ("/opt/my daemon", "--fd={fd}", "-o", "a b")
    assert spec.name == "my daemon"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_names_parse(name: str) -> None:
    assert parse_spec(name) == TargetSpec("daemon", name, (), {}, name)


def test_registry_name_with_options() -> None:
    spec = parse_spec("passthrough_ll:cache=never,writeback,timeout=0")
    assert spec.kind == "daemon"
    assert spec.options == {"cache": "never", "writeback": True, "timeout": "0"}


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("", "empty target spec", "exec:COMMAND"),
        ("   ", "empty target spec", "passthrough_ll"),
        ("exec:", "needs a command", "/dev/fd/{fd}"),
        ("exec", "needs a command", "/dev/fd/{fd}"),
        ("exec:hello_ll -f /mnt", "no {fd} placeholder", "exec:.build/bin/passthrough_ll -f"),
        ("exec:hello_ll '/dev/fd/{fd}", "cannot split", "/dev/fd/{fd}"),
        ("nosuchfs", "unknown target 'nosuchfs'", "fuse-overlayfs"),
        ("Hello_ll", "unknown target", "hello_ll"),
        ("passthrough_ll:=never", "bad option", "key=value"),
        ("passthrough_ll:cache=", "bad option", "key=value"),
        ("mount:", "needs the path", "mount:/mnt/myfs"),
        ("vhost-user:", "needs vhost-user:SOCKET", "SOCKET"),
    ],
)
def test_malformed_specs(text: str, message: str, hint: str) -> None:
    with pytest.raises(TargetSpecError) as info:
        parse_spec(text)
    assert message in str(info.value)
    assert hint in info.value.hint
    assert "\n" not in str(info.value) and "\n" not in info.value.hint


@pytest.mark.parametrize(
    ("text", "kind", "command", "options"),
    [
        ("cuse:cuse -f --name=fc", "cuse", ("cuse", "-f", "--name=fc"), {}),
        ("cuse-example", "cuse-example", (), {}),
        ("cuse-example:name=dev0", "cuse-example", (), {"name": "dev0"}),
    ],
)
def test_cuse_kinds_parse(text: str, kind: str, command: tuple[str, ...], options: dict[str, object]) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.command, spec.options) == (kind, command, options)
    assert is_cuse(spec)


@pytest.mark.parametrize(
    ("text", "kind", "name", "command", "options"),
    [
        ("ref", "daemon", "ref", (), {}),
        ("ref:cache=none,writeback", "daemon", "ref", (), {"cache": "none", "writeback": True}),
        ("mount:/mnt/x", "mount", "mount", ("/mnt/x",), {}),
        ("bindfs", "daemon", "bindfs", (), {}),
        ("fuse2fs", "daemon", "fuse2fs", (), {}),
    ],
)
def test_reference_and_mount_targets(text: str, kind: str, name: str, command: tuple[str, ...],
                                     options: dict[str, object]) -> None:
    spec = parse_spec(text)
    assert (spec.kind, spec.name, spec.command, spec.options) == (kind, name, command, options)


def test_mount_names_are_the_mount_targets() -> None:
    """targets.spec knows the mount targets by name without importing targets.mounts."""
    from targets.daemons import MOUNT_NAMES
    from targets.mounts import MOUNT_TARGETS

    assert sorted(MOUNT_NAMES) == sorted(MOUNT_TARGETS)


def test_vhost_user_specs() -> None:
    from targets.spec import is_vhost_user

    assert parse_spec("vhost-user:/run/vfs.sock").command == ("/run/vfs.sock",)
    assert all(is_vhost_user(parse_spec(t)) for t in ("virtiofsd", "ref:vhost-user,cache=none",
                                                        "vhost-user:/run/vfs.sock"))
    assert not any(is_vhost_user(parse_spec(t)) for t in ("ref", "ref:cache=none", "passthrough_ll"))


def test_virtiofsd_specs() -> None:
    spec = parse_spec("virtiofsd:cache=none,writeback")
    assert spec.kind == "virtiofsd" and spec.options == {"cache": "none", "writeback": True}
    assert parse_spec("virtiofsd").options == {}
