"""The `lockgate` command as a user runs it: real processes, real nats-server, the simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

LOCKGATE = [sys.executable, "-m", "services.cli"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Up:
    proc: subprocess.Popen[str]
    values: dict[str, str]
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LOCKGATE, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )


def _start(tmp: Path, *extra: str) -> Up:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    proc = subprocess.Popen(
        [*LOCKGATE, "up", "--data-dir", str(tmp), "--dev-key", "lg-test-dev-key", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    values: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while "READY" not in values:
        line = proc.stdout.readline()
        assert line, f"lockgate up exited early with {proc.poll()}"
        assert time.monotonic() < deadline, "lockgate up was not ready in time"
        key, _, value = line.strip().partition("=")
        values[key] = value
    env.update(LOCKGATE_NATS_URL=values["NATS_URL"], LOCKGATE_API_KEY=values["LOCKGATE_API_KEY"])
    return Up(proc, values, env)


def _stop(up: Up) -> tuple[int, list[int]]:
    """SIGTERM by PID; returns the exit code and the PIDs of children that outlived it."""
    children = [c.pid for c in psutil.Process(up.proc.pid).children(recursive=True)]
    up.proc.send_signal(signal.SIGTERM)
    code = up.proc.wait(timeout=30)
    time.sleep(0.2)
    alive = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    return code, alive


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    u = _start(tmp_path_factory.mktemp("up"))
    yield u
    if u.proc.poll() is None:
        code, alive = _stop(u)  # SIGTERM: up stops its own nats-server (a SIGKILL would orphan it)
        assert code == 0
        assert alive == []


def test_up_prints_script_readable_lines(up: Up) -> None:
    assert up.values["NATS_URL"].startswith("nats://127.0.0.1:")
    assert up.values["SIMULATOR_URL"].startswith("http://127.0.0.1:")
    assert up.values["LOCKGATE_API_KEY"] == "lg-test-dev-key"
    assert up.values["HTTP_URL"].startswith("http://127.0.0.1:")
    assert up.values["READY"].startswith("9 services")


def test_up_serves_the_http_door(up: Up) -> None:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(
        f"{up.values['HTTP_URL']}/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "Hello"}]}).encode(),
        headers={"Authorization": "Bearer lg-test-dev-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["choices"][0]["message"]["content"].startswith("Simulated reply")


def test_chat_prints_the_answer_and_the_lockgate_block(up: Up) -> None:
    out = up.run("chat", "Hello", "-v")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Simulated reply")
    assert "[lockgate]" in out.stderr
    assert "deployment=sim-" in out.stderr


def test_chat_streams_token_by_token(up: Up) -> None:
    plain = up.run("chat", "Stream me", "--model", "gpt-4o-mini")
    streamed = up.run("chat", "Stream me", "--model", "gpt-4o-mini", "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == plain.stdout  # the simulator is deterministic


def test_jobs_submit_shows_progress_and_writes_results(up: Up, tmp_path: Path) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f"batch item {i}"}]}) + "\n" for i in range(3))
    )
    out = up.run("jobs", "submit", str(batch))
    assert out.returncode == 0, out.stderr
    assert "3 completed, 0 failed" in out.stdout
    results = [json.loads(line) for line in (tmp_path / "batch.results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert all(r["state"] == "completed" for r in results)
    assert results[0]["response"]["choices"][0]["message"]["content"].startswith("Simulated reply")


def test_chat_with_a_json_schema(up: Up, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    path = tmp_path / "colour.json"
    path.write_text(json.dumps(schema))
    out = up.run("chat", "Name a colour", "--json-schema", str(path), "-v")
    assert out.returncode == 0, out.stderr
    assert "colour" in json.loads(out.stdout)
    assert "validation=valid" in out.stderr


def test_chat_reports_errors_with_their_type(up: Up) -> None:
    out = up.run("chat", "Hello", "--model", "no-such-model")
    assert out.returncode == 1
    assert "invalid_request" in out.stderr
    assert "no-such-model" in out.stderr
    bad = up.run("chat", "Hello", "--api-key", "lg-wrong")
    assert bad.returncode == 1
    assert "unauthorized" in bad.stderr


def test_status_lists_the_services(up: Up) -> None:
    out = up.run("status")
    assert out.returncode == 0, out.stderr
    for name in ("guard", "router", "budgeter", "cache", "executor", "validator", "auditor", "jobs", "http"):
        assert name in out.stdout


def test_audit_tail_shows_a_record_per_request(up: Up) -> None:
    assert up.run("chat", "for the audit").returncode == 0
    records: list[dict[str, object]] = []
    for _ in range(20):
        out = up.run("audit", "tail", "--no-follow")
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        if any(r["kind"] == "admitted" for r in records):
            break
        time.sleep(0.2)
    assert any(r["kind"] == "admitted" and r["tenant"] == "dev" for r in records)
    assert all("Simulated" not in json.dumps(r) for r in records)  # no output text in the audit


def test_budget_set_and_show_change_a_budget_at_runtime(up: Up) -> None:
    made = up.run("keys", "create", "--tenant", "cli-budget")
    assert made.returncode == 0, made.stderr
    values = dict(line.split("=", 1) for line in made.stdout.splitlines() if "=" in line)
    out = up.run("budget", "set", "--tenant", "cli-budget", "--daily", "10", "--monthly", "200", "--mode", "soft")
    assert out.returncode == 0, out.stderr
    shown = up.run("budget", "show", "--tenant", "cli-budget")
    assert shown.returncode == 0, shown.stderr
    assert "mode soft, limits from runtime" in shown.stdout
    day, month = shown.stdout.splitlines()[2:4]
    assert day.startswith("d")
    assert "$10.0000" in day
    assert month.startswith("m")
    assert "$200.0000" in month
    as_json = json.loads(up.run("budget", "show", "--tenant", "cli-budget", "--json").stdout)
    assert [w["limit_usd"] for w in as_json["windows"]] == [10.0, 200.0]
    assert as_json["windows"][0]["reset_in_s"] <= 86_400
    # A hard zero budget refuses the tenant's next request (every budgeter applies it within ~1 s).
    assert up.run("budget", "set", "--tenant", "cli-budget", "--daily", "0", "--mode", "hard").returncode == 0
    refused = None
    for _ in range(20):
        refused = up.run("chat", "Over budget?", "--api-key", values["API_KEY"])
        if refused.returncode == 1:
            break
        time.sleep(0.2)
    assert refused is not None
    assert refused.returncode == 1
    assert "budget_exceeded" in refused.stderr
    assert "daily window resets in" in refused.stderr
    key = up.run("budget", "show", "--key", values["KEY_ID"])
    assert key.returncode == 0, key.stderr
    assert f"key {values['KEY_ID']}" in key.stdout


def test_budget_cli_errors_are_clear(up: Up) -> None:
    unknown = up.run("budget", "set", "--tenant", "no-such-tenant", "--daily", "1")
    assert unknown.returncode == 1
    assert "unknown tenant 'no-such-tenant'" in unknown.stderr
    negative = up.run("budget", "set", "--tenant", "dev", "--daily", "-5")
    assert negative.returncode == 1
    assert "--daily must be a non-negative amount" in negative.stderr
    assert up.run("budget", "show", "--key", "k-nope").returncode == 1
    bad_user = up.run("budget", "show", "--user", "alice")
    assert bad_user.returncode == 1
    assert "TENANT/USER" in bad_user.stderr


def test_cli_without_nats_fails_fast_and_clearly() -> None:
    out = subprocess.run(
        [*LOCKGATE, "status", "--nats", "nats://127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert out.returncode == 3
    assert "cannot reach NATS" in out.stderr


def test_sigterm_stops_up_and_everything_it_started(tmp_path: Path) -> None:
    up = _start(tmp_path)
    assert up.run("chat", "Hi").returncode == 0
    code, alive = _stop(up)
    assert code == 0
    assert alive == []


@pytest.mark.slow
def test_split_runs_each_service_as_its_own_process(tmp_path: Path) -> None:
    up = _start(tmp_path, "--split")
    try:
        children = psutil.Process(up.proc.pid).children(recursive=True)
        served = [" ".join(c.cmdline()) for c in children if "serve" in c.cmdline()]
        assert len(served) == 9  # seven stages, the jobs workers and the HTTP door
        out = up.run("chat", "Hello from split mode", "--stream")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Simulated reply")
    finally:
        code, alive = _stop(up)
    assert code == 0
    assert alive == []
