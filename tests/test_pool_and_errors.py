"""matminer's process pool after earlier DIM use in the parent, and errors that must say what
went wrong (an unsupported device, ``--`` on the command line, a 2-D NumPy array of sites)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# -- matminer's pool ------------------------------------------------------------------------------

#: The sequence that hung: DIM used in the parent (on 2 torch threads, so that torch's OpenMP
#: pool exists), then matminer's own process pool (fork, default n_jobs) featurising with DIM.
_POOL_SCRIPT = """
import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
import torch
from matminer.featurizers.base import MultipleFeaturizer
from matminer.featurizers.structure import DensityFeatures
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.datasets import load_sample

torch.set_num_threads(2)
sample = load_sample()
S = sample["structure"].tolist()
df = sample.head(24)
f = DeepInfoMaxFeaturizer()
f.transform(S[:40])
both = MultipleFeaturizer([f, DensityFeatures()])
print("n_jobs", both.n_jobs, flush=True)
out = both.featurize_dataframe(df, "structure", pbar=False)
columns = [c for c in out.columns if c.startswith("dim_")]
np.savez(sys.argv[1], pool=out[columns].to_numpy(dtype=np.float32),
         serial=f.transform(df["structure"].tolist()), density=out["density"].to_numpy())
print("done", flush=True)
"""


def test_matminer_pool_after_dim_use_in_the_parent(tmp_path, sample):
    """``f.transform(S[:40])`` then ``MultipleFeaturizer([f, DensityFeatures()])
    .featurize_dataframe`` with matminer's default ``n_jobs`` finishes with the serial vectors
    (it used to hang forever: the forked workers waited in torch's OpenMP runtime)."""
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "out.npz"
    process = subprocess.Popen(
        [sys.executable, "-c", _POOL_SCRIPT, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"matminer's pool hung after earlier DIM use (120 s); output: {stdout}")
    assert process.returncode == 0, stderr[-3000:]
    n_jobs = int(stdout.split()[1])
    if n_jobs < 2:
        pytest.skip("matminer's default n_jobs is 1 on this machine: no pool to test")
    result = np.load(out)
    assert result["pool"].shape == (24, 128)
    np.testing.assert_allclose(result["pool"], result["serial"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(result["density"], [s.density for s in sample["structure"][:24]])
