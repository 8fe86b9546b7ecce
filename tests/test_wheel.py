"""The built wheel carries the bundled weights and element data, and works when installed.

The wheel is built from a copy of the source tree (so the shared checkout gets no ``build/``
folder), installed with ``pip --target`` into a temporary folder, and imported in a fresh
interpreter whose working directory is outside the source tree; dependencies come from the
running environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLED_WEIGHTS
from pymatgen.core import Lattice, Structure

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.weights import WEIGHTS_FILES

ROOT = Path(__file__).resolve().parent.parent
# every bundled weights folder (the two-channel default and the single-channel one), whole
EXPECTED_MEMBERS = [
    *(f"dimfeat/_bundled/{name}/{file}" for name in BUNDLED_WEIGHTS for file in WEIGHTS_FILES),
    "dimfeat/data/element_features.json",
]
SCRIPT = """
import json
import os
from pymatgen.core import Lattice, Structure
import dimfeat
from dimfeat import DeepInfoMaxFeaturizer
cscl = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
X = DeepInfoMaxFeaturizer(device="cpu").transform([cscl])
print(json.dumps({"file": dimfeat.__file__, "shape": X.shape, "X": X.tolist(),
                  "dtype": str(X.dtype)}))
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_wheel_ships_weights_and_works_installed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("dimfeat", "weights"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
    (wheel,) = dist.glob("dimfeat-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
    for member in EXPECTED_MEMBERS:
        assert member in members, f"{member} missing from {wheel.name}"
    assert not any(name.endswith((".pt", ".pth", ".pkl", ".ckpt")) for name in members)

    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)])
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = _run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])

    assert Path(result["file"]).resolve().is_relative_to(site.resolve())
    assert result["shape"] == [1, 128]
    cscl = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    expected = DeepInfoMaxFeaturizer(device="cpu").transform([cscl])
    installed = np.asarray(result["X"], dtype=result["dtype"])
    assert np.array_equal(installed, expected)
