"""CLI conventions users expect: ``--json`` after the command, and one verdict everywhere (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from cli.main import cli
from cli.options import LedgerGroup
from domain.service import Trial
from ledger.store import Store
from ledger.verdict import judge
from ledger.verify import Finding, Report
from tests.conftest import Cli, Keys, as_owner, register


def _json_after(run: Cli, *args: str) -> object:
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.fixture
def seeded(trial: Trial, keys: Keys, run: Cli, tmp_path: Path) -> Cli:
    register(trial, keys, "S01-001")
    return run


def test_show_json_after_the_command(seeded: Cli) -> None:
    assert _json_after(seeded, "show", "S01-001")["participant"] == "S01-001"  # type: ignore[index]


def test_participants_json_after_the_command(seeded: Cli) -> None:
    rows = _json_after(seeded, "participants")
    assert [r["participant"] for r in rows] == ["S01-001"]  # type: ignore[union-attr,index]


def test_audit_json_after_the_command(seeded: Cli) -> None:
    rows = _json_after(seeded, "audit")
    assert any(r["participant"] == "S01-001" for r in rows)  # type: ignore[union-attr,index]


def test_deviations_json_after_the_command(seeded: Cli) -> None:
    assert isinstance(_json_after(seeded, "deviations"), list)


def test_summary_json_after_the_command(seeded: Cli) -> None:
    assert "enrolled" in _json_after(seeded, "summary")  # type: ignore[operator]


def test_verify_json_after_the_command(seeded: Cli) -> None:
    assert _json_after(seeded, "verify")["ok"] is True  # type: ignore[index]


def test_signer_list_json_after_the_command(seeded: Cli) -> None:
    users = {s["user_id"] for s in _json_after(seeded, "signer", "list")}  # type: ignore[union-attr,index]
    assert "inv1" in users


def test_schema_json_after_the_command(seeded: Cli) -> None:
    assert "properties" in _json_after(seeded, "schema", "ParticipantRegistered")  # type: ignore[operator]


def test_verify_proof_json_after_the_command(seeded: Cli, keys: Keys, tmp_path: Path, trial: Trial) -> None:
    target = list(trial.store.records())[-1]
    assert seeded("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp.txt")).exit_code == 0
    assert seeded("prove", "inclusion", target.event_id, "--out", str(tmp_path / "inc.json")).exit_code == 0
    out = _json_after(Cli(str(tmp_path / "no-db.db")), "verify-proof", str(tmp_path / "inc.json"),
                      "--public-key", f"{keys.path('admin')}.pub")
    assert target.event_id in json.dumps(out)


def test_group_form_still_works(seeded: Cli) -> None:
    assert seeded.json("verify")["ok"] is True  # type: ignore[index]


def test_a_command_registered_later_gets_json_without_doing_anything(seeded: Cli) -> None:
    """A command another module adds, with no --json of its own, accepts it after the command."""
    @click.command("probe-json")
    @click.pass_context
    def probe(ctx: click.Context) -> None:
        click.echo(json.dumps({"json": bool(ctx.obj.get("json"))}))

    @click.group("probe-group")
    def group() -> None:
        pass

    group.add_command(probe, "inner")
    assert isinstance(cli, LedgerGroup)
    cli.add_command(probe)
    cli.add_command(group)
    try:
        assert json.loads(seeded("probe-json", "--json").stdout) == {"json": True}
        assert json.loads(seeded("probe-group", "inner", "--json").stdout) == {"json": True}
        assert json.loads(seeded("probe-json").stdout) == {"json": False}
    finally:
        cli.commands.pop("probe-json")
        cli.commands.pop("probe-group")


# -- one verdict ---------------------------------------------------------------------------


def test_verdict_of_an_empty_ledger_is_not_ok() -> None:
    verdict = judge(Report())
    assert not verdict.ok and verdict.reason == "the ledger is empty"
    assert judge(Report(), since_checkpoint=True).ok


def test_verdict_wants_the_expected_root() -> None:
    report = Report(events=3, root_fingerprint="ab" * 32)
    assert judge(report).ok
    assert judge(report, expect_root="AB" * 32).ok
    wrong = judge(report, expect_root="cd" * 32)
    assert not wrong.ok and wrong.reason is not None and "is not the expected" in wrong.reason


def test_verdict_reports_the_first_finding() -> None:
    report = Report(events=3)
    report.add(Finding(7, "e7", "bad signature"))
    report.add(Finding(2, "e2", "broken link"))
    verdict = judge(report)
    assert not verdict.ok and verdict.more == 1 and "broken link" in (verdict.reason or "")


def _report_html(run: Cli, tmp_path: Path) -> str:
    out = tmp_path / "report.html"
    r = run("report", "--out", str(out))
    assert r.exit_code == 0, r.output
    return out.read_text()


def test_report_of_an_empty_ledger_shows_no_verified_banner(sqlite_db: str, tmp_path: Path) -> None:
    Store(sqlite_db).close()  # an events table and no event
    html = _report_html(Cli(sqlite_db), tmp_path)
    assert "VERIFIED" not in html
    assert "FAILED</span>: the ledger is empty" in html


def test_report_of_a_tampered_ledger_shows_no_verified_banner(seeded: Cli, trial: Trial, tmp_path: Path) -> None:
    assert "VERIFIED" in _report_html(seeded, tmp_path)
    store = as_owner(trial.store)
    victim = list(store.records())[-1]
    store.execute_raw(f"UPDATE {store.events_table} SET state = ? WHERE event_id = ?",
                      (victim.state.replace(b"S01", b"S02", 1), victim.event_id))
    out = tmp_path / "report.html"
    r = seeded("report", "--out", str(out))
    assert r.exit_code == 1  # SPEC §5.4: nothing read from a log that does not verify is shown
    html = out.read_text()
    assert "VERIFIED" not in html and "FAILED" in html and "S01-" not in html


def test_demo_uses_the_verdict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The demo's last word is the verdict's: a failing verdict fails the demo (exit 1)."""
    import cli.demo as demo_module
    from ledger.verdict import Verdict

    monkeypatch.setattr(demo_module, "judge", lambda report: Verdict(False, "planted failure"))
    r = Cli(str(tmp_path / "d.db"))("demo", "--participants", "1")
    assert r.exit_code == 1 and "verify: FAILED — planted failure" in r.stderr

