"""`lockgate bench` keeps working: a tiny run of the default and the HTTP scenario."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "bench", "-n", "20", "-c", "2", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
def test_default_bench_prints_both_paths_and_the_difference() -> None:
    lines = _bench().splitlines()
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in lines)
        if len(cells) > 2 and cells[0] in ("direct", "mesh") and cells[1].isdigit()
    }
    assert rows["direct"][1] == rows["mesh"][1] == "2"  # concurrency
    assert rows["mesh"][6] == "0"  # errors
    assert float(rows["mesh"][7]) > 0  # CPU ms per request was measured
    assert any(line.startswith("added") and "throughput ratio" in line for line in lines)
    assert any(line.startswith("mesh RSS") for line in lines)


@pytest.mark.slow
def test_http_bench_compares_door_nats_and_direct() -> None:
    text = _bench("--scenario", "http")
    assert "ratios: req/s http/direct" in text
    assert "ttft" in text
