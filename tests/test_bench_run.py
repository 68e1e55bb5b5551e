"""benchmarks/run.py, the benchmark harness, as a smoke run on tiny sizes (no timing asserted)."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
CASES = ["peak", "reference", "convlstm_s", "layout", "precision", "models", "memory", "data"]


def _harness():
    spec = importlib.util.spec_from_file_location("convcast_bench_run", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_records_every_case_and_its_machine(tmp_path, capsys):
    run = _harness()
    out = tmp_path / "run.json"
    assert run.main(["--quick", "--threads", "1", "--rounds", "2", "--cases", ",".join(CASES),
                     "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    meta = data["meta"]
    assert meta["threads"] == [1] and meta["cpu"]["logical_cores"] >= 1
    assert {"flags", "model"} <= set(meta["cpu"]) and len(meta["load_after"]) == 3
    assert [r["case"] for r in data["results"]] == CASES
    ref = data["results"][1]
    assert ref["max_abs_output_diff"] < 1e-5  # the plain reference computes the same network
    assert set(ref["speedup_vs_reference"]["convcast"]) == {"min", "median", "max"}
    assert ref["rounds"] == 2 and ref["gflop_per_step"] > 0
    memory = next(r for r in data["results"] if r["case"] == "memory")
    assert memory["long"]["plain_bytes"] > 0 and memory["long"]["checkpointed_bytes"] > 0
    printed = capsys.readouterr().out
    assert "convcast vs the plain reference" in printed and "not measured (no GPU lent)" in printed
    assert run.main(["--markdown", "--out", str(out)]) == 0  # the section, regenerated
    assert capsys.readouterr().out == printed


def test_bad_options_are_refused_with_the_valid_ones(tmp_path):
    run = _harness()
    with pytest.raises(SystemExit, match="valid: peak"):
        run.main(["--quick", "--cases", "nope", "--out", str(tmp_path / "x.json")])
    with pytest.raises(SystemExit, match="rounds >= 2"):
        run.main(["--quick", "--rounds", "1", "--out", str(tmp_path / "x.json")])
