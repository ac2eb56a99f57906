"""The budget benchmark runs and prints its figures (no timing assertions: shared CPUs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_budget_runs_and_prints_figures() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "--scenario", "budget", "-n", "200", "-c", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reserve p50" in out.stdout
    assert "reservations/s" in out.stdout
    assert out.stdout.count("zero overshoot") == 3  # 1 replica; 3 replicas through the queue group, then owners
    assert "3 replicas any" in out.stdout
    assert "3 replicas owner" in out.stdout
    assert "CPU per reservation" in out.stdout
