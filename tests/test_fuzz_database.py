"""fuzz.database: examples shared through Redis or a directory, one namespace per campaign."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.database import InMemoryExampleDatabase

from fuzz.database import NamespacedDatabase, open_database
from tests.redis_server import redis_server


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


def test_two_redis_clients_share_a_namespace(redis_url: str) -> None:
    writer, reader = open_database(redis_url, "ns"), open_database(redis_url, "ns")
    writer.save(b"key", b"one")
    writer.save(b"key", b"two")
    assert sorted(reader.fetch(b"key")) == [b"one", b"two"]
    reader.move(b"key", b"other", b"two")
    assert set(writer.fetch(b"key")) == {b"one"} and set(writer.fetch(b"other")) == {b"two"}
    reader.delete(b"key", b"one")
    assert list(writer.fetch(b"key")) == []


def test_another_namespace_sees_nothing(redis_url: str) -> None:
    open_database(redis_url, "passthrough_ll").save(b"key", b"value")
    assert list(open_database(redis_url, "hello_ll").fetch(b"key")) == []
    assert list(open_database(redis_url, "passthrough_ll").fetch(b"key")) == [b"value"]


def test_listeners_hear_their_namespace_only() -> None:
    # In memory: RedisExampleDatabase hands on changes only while someone polls its pubsub
    shared = InMemoryExampleDatabase()
    heard: list[object] = []
    ours = NamespacedDatabase(shared, "ns")
    ours.add_listener(heard.append)
    NamespacedDatabase(shared, "elsewhere").save(b"key", b"not ours")
    theirs = NamespacedDatabase(shared, "ns")
    theirs.save(b"key", b"ours")
    theirs.move(b"key", b"other", b"ours")
    ours.clear_listeners()
    ours.save(b"key", b"unheard")
    assert heard == [("save", (b"key", b"ours")), ("delete", (b"key", b"ours")),
                     ("save", (b"other", b"ours"))]


def test_directory_form(tmp_path: Path) -> None:
    where = str(tmp_path / "db")
    open_database(where, "ns").save(b"key", b"value")
    assert list(open_database(where, "ns").fetch(b"key")) == [b"value"]
    assert list(open_database(where, "other").fetch(b"key")) == []


def test_default_is_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_database(None, "ns").save(b"key", b"value")
    assert (tmp_path / ".hypothesis" / "fuzz").is_dir()
    assert list(open_database(str(tmp_path / ".hypothesis" / "fuzz"), "ns").fetch(b"key")) == [b"value"]


def test_unreachable_redis_names_the_url() -> None:
    with redis_server() as url:
        pass  # stopped: nobody listens on its port now
    with pytest.raises(ConnectionError, match=r"redis://127\.0\.0\.1:\d+/0.*PING"):
        open_database(url, "ns")


@pytest.mark.parametrize("where", ["http://example.invalid/db", "redis://host:notaport/0"])
def test_bad_urls_are_refused(where: str) -> None:
    with pytest.raises((ValueError, ConnectionError), match="example database"):
        open_database(where, "ns")


def test_namespace_with_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NUL"):
        NamespacedDatabase(open_database(str(tmp_path), "x"), "a\0b")
