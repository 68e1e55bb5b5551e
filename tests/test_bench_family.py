"""benchmarks/family.py as a smoke run: two members, two steps each (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_family_benchmark_smoke(tmp_path):
    out = tmp_path / "family.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/family.py"), "--members",
                          "convlstm", "trajgru", "--minutes", "2", "--max_steps", "2",
                          "--test_size", "8", "--json", str(out)],
                         capture_output=True, text=True, timeout=600,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {r["member"] for r in report["runs"]} == {"convlstm", "trajgru"}
    assert all(r["steps"] == 2 and r["mse"] > 0 for r in report["runs"])
    assert "| `trajgru` |" in run.stdout and report["machine"]["model"]
