"""``consent-relay demo``: the story plays to its end, by itself, and cleans up."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from consent_relay import demo

CLI = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "consent-relay")
TYPES = ("event.created", "event.updated", "user.created", "user.updated", "user.deleted")


def test_cli_demo_runs_to_the_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_RELAY_")}
    env["COLUMNS"] = "120"
    result = subprocess.run(
        [CLI, "demo", "--speed", "10"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for word in (*TYPES, "CRM", "Email", "failed (500)", "delivered", "Demo complete"):
        assert word in out, f"{word!r} missing from:\n{out}"
    assert "token requests: 1" in out
    assert "messages delivered: 12 (CRM 8, Email 4)" in out
    assert "attempts: 14" in out
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("keep", [False, True])
def test_main_in_process(
    keep: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "120")
    assert demo.main(speed=20, keep=keep) == 0
    out = capsys.readouterr().out
    assert all(kind in out for kind in TYPES), out
    left = list(tmp_path.glob("consent-relay-demo-*"))
    if keep:
        assert len(left) == 1
        assert (left[0] / "consent-relay.db").exists()
        assert str(left[0]) in out.replace("\n", "")
    else:
        assert left == []


def test_refuses_a_speed_that_is_not_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(speed=0) == 2
    assert "--speed" in capsys.readouterr().out


def test_fails_when_deliveries_do_not_all_arrive(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = {path: [*types] for path, types in demo.EXPECTED.items()}
    expected[demo.EMAIL].append("user.created")  # one more than the story produces
    monkeypatch.setattr(demo, "EXPECTED", expected)
    monkeypatch.setattr(demo, "MIN_SETTLE_SECONDS", 0.5)
    assert demo.main(speed=20) == 1
    assert "not every webhook was delivered in time" in capsys.readouterr().out
