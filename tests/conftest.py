"""Shared fixtures: back ends (SQLite and PostgreSQL), keys, a CLI runner, a seeded ledger.

PostgreSQL tests use a fresh schema each, so runs never collide. On a laptop
without a server they skip with the reason; under CI=true a missing server
fails the run instead.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from domain.protocol import bundled_protocol_path, load_protocol
from domain.service import Command, Trial
from ledger.keyfile import TEST_ONLY_KDF
from ledger.keys import Signer, generate, write_key_pair
from ledger.store import Store

PG_DSN = os.environ.get("TRIAL_LEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
PASSPHRASE = "correct horse battery staple"
ROLES = ("investigator", "coordinator", "lab", "pharmacy", "monitor")


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return None
    except psycopg.Error as e:
        return str(e).strip().splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> str:
    problem = _pg_available()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL must run under CI=true, but: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {problem}")
    return PG_DSN


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{pg_server}?schema={schema}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


@dataclass
class Keys:
    """Key files on disk plus the loaded signers, one per user."""

    dir: Path
    signers: dict[str, Signer] = field(default_factory=dict)

    def path(self, user: str) -> Path:
        return self.dir / f"{user}.key"


_KEY_CACHE: dict[str, tuple[Signer, bytes, str]] = {}


def make_keys(directory: Path) -> Keys:
    """Key files for admin, each role and an outsider, in ``directory``.

    Keys are generated once per session and copied, and written with the
    test-only cheap Argon2id parameters (the file names them, so loading
    stays honest); production keys are slow to guess on purpose.
    """
    out = Keys(directory / "keys")
    out.dir.mkdir()
    for user in ("admin", "inv1", "coord1", "lab1", "pharm1", "mon1", "outsider"):
        if user not in _KEY_CACHE:
            signer = generate()
            path = directory / f"cache-{user}.key"
            write_key_pair(signer, user, path, PASSPHRASE, kdf=TEST_ONLY_KDF)
            _KEY_CACHE[user] = (signer, path.read_bytes(), (path.with_name(path.name + ".pub")).read_text())
        signer, blob, pub = _KEY_CACHE[user]
        key_path = out.path(user)
        key_path.write_bytes(blob)
        key_path.chmod(0o600)
        key_path.with_name(key_path.name + ".pub").write_text(pub)
        out.signers[user] = signer
    return out


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


USER_ROLES = {"inv1": "investigator", "coord1": "coordinator", "lab1": "lab", "pharm1": "pharmacy", "mon1": "monitor"}


class Cli:
    """Runs ``trial-ledger`` in-process against one --db."""

    def __init__(self, db: str):
        self.db = db
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        full_env = {"TRIAL_LEDGER_PASSPHRASE": PASSPHRASE, **(env or {})}
        return self.runner.invoke(cli, ["--db", self.db, *args], env=full_env, obj={}, catch_exceptions=False)

    def json(self, *args: str) -> object:
        """Run a read command with the global --json flag and parse its output."""
        result = self.runner.invoke(cli, ["--db", self.db, "--json", *args],
                                    env={"TRIAL_LEDGER_PASSPHRASE": PASSPHRASE}, obj={}, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def run(db: str) -> Cli:
    return Cli(db)


def initialise(db: str, keys: Keys) -> Trial:
    """An initialised ledger with one signer per role, through the library."""
    trial = Trial(Store(db))
    protocol = load_protocol(bundled_protocol_path())
    trial.initialise(protocol, study_id="MSC-T2DM", admin_id="admin", admin_name="Ada Admin",
                     signer=keys.signers["admin"])
    for user, role in USER_ROLES.items():
        trial.append(Command("SignerRegistered", None, {
            "user_id": user, "name": f"Name of {user}", "role": role,
            "public_key": keys.signers[user].public_b64, "valid_from": "2010-01-01T00:00:00+00:00",
        }), keys.signers["admin"])
    return trial


@pytest.fixture
def trial(db: str, keys: Keys) -> Iterator[Trial]:
    t = initialise(db, keys)
    yield t
    t.store.close()


def register(trial: Trial, keys: Keys, participant: str, sex: str = "M", birth_year: int = 1960) -> None:
    trial.append(Command("ParticipantRegistered", participant,
                         {"site": "S01", "sex": sex, "birth_year": birth_year},
                         occurred_at="2010-09-01T09:00:00+08:00"), keys.signers["inv1"])


def as_owner(store: Store) -> Store:
    """Drop the append-only guards, as an attacker with owner rights on the database can."""
    t = store.table("ledger_events")
    if store.postgres:
        store.execute_raw(f"DROP TRIGGER IF EXISTS ledger_events_no_update_delete ON {t}")
        store.execute_raw(f"DROP TRIGGER IF EXISTS ledger_events_no_truncate ON {t}")
    else:
        store.execute_raw("DROP TRIGGER IF EXISTS ledger_events_no_update")
        store.execute_raw("DROP TRIGGER IF EXISTS ledger_events_no_delete")
    return store


def event_count(db: str) -> int:
    store = Store(db)
    try:
        return store.count()
    finally:
        store.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how many cases each fuzz test tried (`make fuzz` quotes these in docs/reliability.md)."""
    from tests.fuzzing import FULL, TRIED

    if TRIED:
        terminalreporter.section(f"fuzz cases tried ({'full run' if FULL else 'sample'})")
        for name, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{count:>7,}  {name}")
