"""The examples run as scripts (as ``make demo`` runs them) and print what they promise.

They run on fewer crystals than by default (``--limit``/``--n``) to keep the suite short.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import weights_labels

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
pytestmark = pytest.mark.slow


def _run(name: str, *args: str) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # small shared machines
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def _line(lines: list[str], pattern: str) -> re.Match:
    for line in lines:
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matches {pattern!r} in:\n" + "\n".join(lines))


def test_pipeline_demo():
    lines = _run("pipeline.py", "--limit", "200")
    assert _line(lines, r"^data: 200 Materials Project crystals")
    assert _line(lines, r"^features: 200 x 128 in [\d.]+ s$")
    throughput = float(_line(lines, r"^throughput: (\d+) structures/s on (cpu|cuda)$").group(1))
    assert throughput > 0
    assert _line(lines, r"^test crystals: 40 \(train: 160, seed 0\)$")
    mae = float(_line(lines, r"^test MAE DIM \+ LinearRegression: ([\d.]+) eV/atom$").group(1))
    dummy = float(_line(lines, r"^test MAE mean predictor: ([\d.]+) eV/atom$").group(1))
    assert 0 < mae < dummy


def test_dataframe_example():
    lines = _run("dataframe.py")
    labels = weights_labels()  # the default weights: dim_ctx_0 ... dim_struct_63
    assert _line(lines, rf"^rows: 21, feature columns: 128 \({labels[0]} \.\.\. {labels[-1]}\)$")
    assert _line(lines, r"^featurised rows: 20$")
    assert _line(lines, r"^NaN rows: 1 \['disordered-FeNi'\]$")
    assert _line(lines, r"^error disordered-FeNi: .*InvalidStructureError: disordered structure")
    assert _line(lines, r"^10\s+disordered-FeNi\s+NaN\s+NaN\s+NaN$")


def test_baselines_example():
    lines = _run("baselines.py", "--n", "25")
    assert _line(lines, r"^data: 25 crystals")
    rows = {}
    for name in ("mean predictor", "DIM (trained)", "DIM (untrained)", "XRD pattern", "OFM"):
        match = _line(lines, rf"^{re.escape(name)}\s+(\d+)\s+([\d.]+)\s+([\d.]+)$")
        rows[name] = (int(match.group(1)), float(match.group(2)))
    assert {name: n for name, (n, _) in rows.items()} == {
        "mean predictor": 0,
        "DIM (trained)": 128,
        "DIM (untrained)": 128,
        "XRD pattern": 128,
        "OFM": 1024,
    }
    assert all(math.isfinite(mae) and mae > 0 for _, mae in rows.values())
