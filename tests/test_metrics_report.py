"""Reports (JSON, table, lead-time plots), classification wrappers and the import rule."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import convcast.metrics
from convcast.metrics import (
    Accuracy,
    ConfusionMatrix,
    accuracy,
    confusion_matrix,
    format_table,
    write_metrics_json,
)
from convcast.metrics.report import expand_thresholds
from convcast.viz.plots import plot_lead_time

RESULTS = {
    "convlstm": {"mse": torch.tensor([10.0, 20.0, 30.0]),
                 "csi": torch.tensor([[0.5, 0.4, float("nan")], [0.2, float("nan"), 0.1]])},
    "persistence": {"mse": np.array([15.0, 35.0, 40.0])},
}
THRESHOLDS = [0.5, 2.0]


def test_write_metrics_json_stores_mean_and_per_lead_time(tmp_path):
    path = write_metrics_json(tmp_path / "out" / "metrics.json", RESULTS, THRESHOLDS)
    data = json.loads(path.read_text())
    assert data["convlstm"]["mse"] == 20.0
    assert data["convlstm"]["per_lead_time"]["mse"] == [10.0, 20.0, 30.0]
    # a NaN lead time is skipped by the mean and written as null (strict JSON)
    assert data["convlstm"]["csi@0.5"] == pytest.approx(0.45)
    assert data["convlstm"]["per_lead_time"]["csi@0.5"][2] is None
    assert data["convlstm"]["csi@2"] == pytest.approx(0.15)
    assert data["persistence"]["mse"] == pytest.approx(30.0)
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(ValueError, match="thresholds"):
        write_metrics_json(path, RESULTS)  # [K, T] entry without thresholds
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_format_table_rows_and_columns():
    table = format_table(RESULTS, THRESHOLDS)
    lines = table.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "mse", "csi@0.5", "csi@2"]
    rows = {cells[0]: cells[1:] for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert rows["convlstm"] == ["20", "0.45", "0.15"]
    assert rows["persistence"] == ["30", "-", "-"]  # metric the model lacks


def test_expand_thresholds_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected"):
        expand_thresholds({"x": torch.zeros(2, 2, 2)})
    with pytest.raises(ValueError, match="2 thresholds"):
        expand_thresholds({"csi": torch.zeros(3, 4)}, THRESHOLDS)


def test_plot_lead_time_writes_one_png_per_metric(tmp_path):
    paths = plot_lead_time(RESULTS, tmp_path / "plots", THRESHOLDS, minutes_per_step=6)
    assert [p.name for p in paths] == ["mse.png", "csi_0.5.png", "csi_2.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)


def test_classification_wrappers():
    target = torch.tensor([0, 1, 2, 2, 1, 0])
    pred = torch.tensor([0, 2, 2, 2, 1, 1])
    assert accuracy(pred, target, 3).item() == pytest.approx(4 / 6)
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]  # rows true, columns predicted
    logits = torch.nn.functional.one_hot(pred, 3).float()
    acc, mat = Accuracy(3), ConfusionMatrix(3)
    for sl in (slice(0, 4), slice(4, 6)):
        acc.update(logits[sl], target[sl])
        mat.update(pred[sl], target[sl])
    assert acc.compute().item() == pytest.approx(4 / 6)
    assert mat.compute().tolist() == cm.tolist()


def test_metrics_and_viz_import_no_model_code():
    forbidden = ("convcast.models", "convcast.layers", "convcast.train", "convcast.cli")
    files = [*Path(convcast.metrics.__file__).parent.glob("*.py")]
    files.append(Path(convcast.metrics.__file__).parents[1] / "viz" / "plots.py")
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(forbidden)], path
