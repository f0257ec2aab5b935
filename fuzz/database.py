"""Where fuzz campaigns keep hypothesis's examples: a directory, or a Redis server that
several machines share; each campaign under its own namespace (say, its target), so that
campaigns against different targets never replay each other's examples."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase, ListenerEventT

DEFAULT_DIR = Path(".hypothesis") / "fuzz"
REDIS_SCHEMES = ("redis://", "rediss://")
PING_TIMEOUT = 2.0  # s, to connect, and for the PING that checks the server answers
SOCKET_TIMEOUT = 10.0  # s, for each later command
_SEPARATOR = b"\0"


def open_database(where: str | None, namespace: str) -> ExampleDatabase:
    """``redis://HOST:PORT[/DB]`` (checked with a PING), a directory, or None for
    ``.hypothesis/fuzz`` under the working directory; keys prefixed with ``namespace``."""
    if where is None:
        inner: ExampleDatabase = DirectoryBasedExampleDatabase(Path.cwd() / DEFAULT_DIR)
    elif where.startswith(REDIS_SCHEMES):
        inner = _redis(where)
    elif "://" in where:
        raise ValueError(f"example database {where!r}: give redis://HOST:PORT[/DB] or a directory")
    else:
        inner = DirectoryBasedExampleDatabase(Path(where).expanduser())
    return NamespacedDatabase(inner, namespace)


def _redis(url: str) -> ExampleDatabase:
    import redis
    from hypothesis.extra.redis import RedisExampleDatabase

    try:
        probe = redis.Redis.from_url(url, socket_connect_timeout=PING_TIMEOUT, socket_timeout=PING_TIMEOUT)
    except ValueError as exc:
        raise ValueError(f"example database {url!r}: {exc}") from None
    try:
        probe.ping()
    except redis.RedisError as exc:
        raise ConnectionError(f"example database {url!r} does not answer PING: {exc}") from None
    finally:
        probe.close()
    client = redis.Redis.from_url(url, socket_connect_timeout=PING_TIMEOUT, socket_timeout=SOCKET_TIMEOUT)
    return RedisExampleDatabase(client)


class NamespacedDatabase(ExampleDatabase):
    """``inner`` with every key prefixed by ``namespace``; change events are passed on for
    this namespace's keys only, without the prefix."""

    def __init__(self, inner: ExampleDatabase, namespace: str) -> None:
        super().__init__()
        prefix = namespace.encode()
        if _SEPARATOR in prefix:
            raise ValueError(f"example database namespace {namespace!r} holds a NUL")
        self.inner = inner
        self.namespace = namespace
        self._prefix = prefix + _SEPARATOR

    def __repr__(self) -> str:
        return f"NamespacedDatabase({self.inner!r}, {self.namespace!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, NamespacedDatabase) and self.inner == other.inner
                and self.namespace == other.namespace)

    def __hash__(self) -> int:
        return hash(self.namespace)

    def _key(self, key: bytes) -> bytes:
        return self._prefix + key

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self.inner.fetch(self._key(key))

    def save(self, key: bytes, value: bytes) -> None:
        self.inner.save(self._key(key), value)

    def delete(self, key: bytes, value: bytes) -> None:
        self.inner.delete(self._key(key), value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.inner.move(self._key(src), self._key(dest), value)

    def _start_listening(self) -> None:
        self.inner.add_listener(self._forward)

    def _stop_listening(self) -> None:
        self.inner.remove_listener(self._forward)

    def _forward(self, event: ListenerEventT) -> None:
        key = event[1][0]
        if not key.startswith(self._prefix):
            return
        key = key[len(self._prefix):]
        if event[0] == "save":
            self._broadcast_change(("save", (key, event[1][1])))
        else:
            self._broadcast_change(("delete", (key, event[1][1])))
