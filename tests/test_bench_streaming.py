"""benchmarks/streaming.py as a smoke run on its tiny case (no timing asserted)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "streaming.py"


def test_quick_run_records_the_ratios_and_that_the_stream_equals_the_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("convcast_bench_streaming", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "streaming.json"
    bench.main(["--quick", "--rounds", "2", "--parts", "stream", "--out", str(out)])
    report = json.loads(out.read_text())
    (case,) = report["results"]
    assert case["max_abs_diff_stream_vs_model"] < 1e-5
    for key in ("update_vs_reencode", "forecast_vs_whole", "convs_alternating_vs_in_a_row"):
        r = case[key]
        assert len(r["a_ms"]) == len(r["b_ms"]) == 2 and r["ratio_min"] <= r["ratio_max"]
    assert report["machine"]["threads"] == 1 and len(report["load_before"]) == 3
    assert "convs alternating / in a row" in capsys.readouterr().out
