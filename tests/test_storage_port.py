"""The storage port: where data goes, what a refused command leaves behind, one SQL dialect.

* Only ``--db`` / ``$TRIAL_LEDGER_DB`` decide where data goes: eventsourcing's
  own variables (prefixed ``LEDGER_*`` and bare) pointed at another database
  change nothing (issue 14).
* A refused command creates nothing: no file, no schema, no table (issue 16).
* ``?`` placeholders work through every cursor the store hands out, on both back ends.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import Cli, Keys
from domain.protocol import bundled_protocol_path
from ledger.dialect import Dialect
from ledger.errors import UsageProblem
from ledger.store import Store


def _init(run: Cli, keys: Keys) -> None:
    r = run("init", "--protocol", str(bundled_protocol_path()), "--study-id", "MSC-T2DM",
            "--admin-id", "admin", "--admin-name", "Ada Admin", "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output


def _schema_exists(pg_server: str, schema: str) -> bool:
    with psycopg.connect(pg_server) as conn:
        row = conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)).fetchone()
        return row is not None


def _hostile_env(tmp_path: Path, pg_server: str | None, other_schema: str) -> dict[str, str]:
    """eventsourcing's settings, prefixed and bare, all pointing somewhere else."""
    other = str(tmp_path / "other.db")
    env = {}
    for prefix in ("LEDGER_", ""):
        env.update({
            f"{prefix}SQLITE_DBNAME": other, f"{prefix}PERSISTENCE_MODULE": "eventsourcing.sqlite",
            f"{prefix}POSTGRES_SCHEMA": other_schema, f"{prefix}POSTGRES_DBNAME": "postgres",
            f"{prefix}CREATE_TABLE": "n",
            f"{prefix}APPLICATION_RECORDER_TOPIC": "eventsourcing.sqlite:SQLiteApplicationRecorder",
        })
    return env


def test_prefixed_environment_cannot_redirect_a_sqlite_ledger(tmp_path: Path, keys: Keys,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    asked = str(tmp_path / "asked.db")
    for name, value in _hostile_env(tmp_path, None, "elsewhere").items():
        monkeypatch.setenv(name, value)
    run = Cli(asked)
    _init(run, keys)
    r = run("signer", "add", "--user-id", "inv1", "--name", "Dr Ivy", "--role", "investigator",
            "--public-key", str(keys.path("inv1")) + ".pub", "--key", str(keys.path("admin")))
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "other.db").exists()
    with sqlite3.connect(asked) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ledger_events").fetchone()[0] == 2
    assert run("verify").exit_code == 0


@pytest.mark.postgres
def test_prefixed_environment_cannot_redirect_a_postgres_ledger(pg_url: str, pg_server: str, tmp_path: Path,
                                                                 keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    other_schema = f"t_other_{uuid.uuid4().hex[:8]}"
    for name, value in _hostile_env(tmp_path, pg_server, other_schema).items():
        monkeypatch.setenv(name, value)
    run = Cli(pg_url)
    _init(run, keys)
    assert run("verify").exit_code == 0
    assert not _schema_exists(pg_server, other_schema)
    assert not (tmp_path / "other.db").exists()
    store = Store(pg_url, create=False)
    try:
        assert store.count() == 1
    finally:
        store.close()


@pytest.mark.parametrize("args", [
    ("verify",),
    ("participants",),
    ("append", "ParticipantRegistered", "--participant", "S01-001", "--data", '{"site": "S01"}'),
])
def test_refused_command_creates_no_sqlite_file(tmp_path: Path, keys: Keys, args: tuple[str, ...]) -> None:
    db = tmp_path / "nothing.db"
    r = Cli(str(db))(*args, "--key", str(keys.path("inv1"))) if args[0] == "append" else Cli(str(db))(*args)
    assert r.exit_code == 2 and "no ledger there" in r.stderr, r.output
    assert not db.exists()


def test_refused_command_leaves_an_empty_sqlite_file_without_tables(tmp_path: Path, keys: Keys) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    r = Cli(str(db))("append", "ParticipantRegistered", "--participant", "S01-001", "--data", '{"site": "S01"}',
                     "--key", str(keys.path("inv1")))
    assert r.exit_code == 2, r.output
    assert db.stat().st_size == 0


@pytest.mark.postgres
@pytest.mark.parametrize("args", [
    ("verify",),
    ("summary",),
    ("append", "ParticipantRegistered", "--participant", "S01-001", "--data", '{"site": "S01"}'),
])
def test_refused_command_creates_no_postgres_schema_or_table(pg_url: str, pg_server: str, keys: Keys,
                                                             args: tuple[str, ...]) -> None:
    schema = pg_url.rsplit("schema=", 1)[1]
    extra = ("--key", str(keys.path("inv1"))) if args[0] == "append" else ()
    r = Cli(pg_url)(*args, *extra)
    assert r.exit_code == 2 and "no ledger there" in r.stderr, r.output
    assert not _schema_exists(pg_server, schema)


@pytest.mark.postgres
def test_refused_append_in_an_existing_empty_schema_creates_no_table(pg_url: str, pg_server: str,
                                                                     keys: Keys) -> None:
    schema = pg_url.rsplit("schema=", 1)[1]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    r = Cli(pg_url)("append", "ParticipantRegistered", "--participant", "S01-001", "--data", '{"site": "S01"}',
                    "--key", str(keys.path("inv1")))
    assert r.exit_code == 2, r.output
    with psycopg.connect(pg_server) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                              (schema,)).fetchall()
    assert tables == []


def test_store_without_create_refuses_with_the_usage_message(tmp_path: Path) -> None:
    with pytest.raises(UsageProblem, match=r"no ledger there \(create one with `trial-ledger init`\)"):
        Store(str(tmp_path / "absent.db"), create=False)
    assert not (tmp_path / "absent.db").exists()


def test_placeholders_translate_once_outside_quotes() -> None:
    pg, lite = Dialect(postgres=True, schema='we"ird'), Dialect(postgres=False)
    assert lite.placeholders("SELECT ? WHERE a = '?'") == "SELECT ? WHERE a = '?'"
    assert pg.placeholders("SELECT ? WHERE a = '?' AND b LIKE 'x%'") == "SELECT %s WHERE a = '?' AND b LIKE 'x%%'"
    assert pg.placeholders("SELECT 'x%'", has_params=False) == "SELECT 'x%'"
    assert pg.table("t") == '"we""ird"."t"' and lite.table("t") == "t"


def test_write_cursor_and_fetch_take_question_marks_on_both_back_ends(db: str) -> None:
    store = Store(db)
    try:
        t = store.table("port_probe")
        with store.write_transaction() as c:
            c.execute(f"CREATE TABLE {t} (k TEXT PRIMARY KEY, v TEXT)")
            c.execute(f"INSERT INTO {t} (k, v) VALUES (?, ?)", ("a", "50% off?"))
            c.executemany(f"INSERT INTO {t} (k, v) VALUES (?, ?)", [("b", "2"), ("c", "3")])
            assert c.execute(f"SELECT v FROM {t} WHERE k = ?", ("a",)).fetchone()["v"] == "50% off?"
        rows = store.fetch(f"SELECT k FROM {t} WHERE v LIKE '%off%' OR k = ? ORDER BY k", ("c",))
        assert [r["k"] for r in rows] == ["a", "c"]
    finally:
        store.close()


def test_libpq_environment_cannot_redirect_a_postgres_ledger(pg_server: str, keys: Keys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq reads PGHOSTADDR even beside a given host, and PGOPTIONS can set another search_path: neither
    may move data. Asked for a host that does not resolve, the ledger refuses instead of writing to the
    address the environment names (the attack: PGHOSTADDR=127.0.0.1 with --db on db.invalid)."""
    schema = f"t_libpq_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    monkeypatch.setenv("PGOPTIONS", f"-c search_path={schema}_other")
    monkeypatch.setenv("PGDATABASE", "postgres")
    r = Cli(f"postgresql://postgres@db.invalid:5432/test?schema={schema}")(
        "init", "--protocol", str(bundled_protocol_path()), "--study-id", "S", "--admin-id", "admin",
        "--admin-name", "A", "--key", str(keys.path("admin")))
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert not _schema_exists(pg_server, schema)
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    monkeypatch.setenv("PGOPTIONS", f"-c search_path={schema}_other")
    good = Cli(f"{pg_server}?schema={schema}")
    try:
        _init(good, keys)
        assert _schema_exists(pg_server, schema) and not _schema_exists(pg_server, f"{schema}_other")
        assert good("verify").exit_code == 0
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
