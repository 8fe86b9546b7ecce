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


# -- devices dimfeat does not run on -------------------------------------------------------------


@pytest.mark.parametrize("device", ["mps", "meta", "xla"])
def test_unsupported_device_is_a_clear_value_error(device, nacl):
    """``device="mps"``/``"meta"`` gave raw torch errors at transform ("PyTorch is not linked
    with support for mps devices", "Cannot copy out of meta tensor") and passed fit."""
    from sklearn.base import clone

    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.regressor import SiteNetRegressor
    from dimfeat.training import resolve_device

    message = rf"device='{device}'.*'{device}' devices are not supported.*'cpu', 'cuda' or 'cuda:N'"
    with pytest.raises(ValueError, match=message):
        resolve_device(device)
    featurizer = DeepInfoMaxFeaturizer(device=device)
    with pytest.raises(ValueError, match=r"'device' parameter.*Got '" + device + "' instead.*"):
        featurizer.fit([nacl])
    with pytest.raises(ValueError, match=message):
        featurizer.transform([nacl])
    fitted = clone(featurizer).set_params(device="cpu").fit([nacl])
    with pytest.raises(ValueError, match=message):
        fitted.set_params(device=device).transform([nacl])
    with pytest.raises(ValueError, match=message):
        SiteNetRegressor(device=device, epochs=1).fit([nacl, nacl], [0.0, 1.0])


def test_a_device_string_torch_cannot_read_is_a_value_error():
    from dimfeat.training import resolve_device

    with pytest.raises(ValueError, match=r"device='cuda:x' is not a device; use 'auto'"):
        resolve_device("cuda:x")
    assert resolve_device("cpu").type == "cpu"


# -- options after '--' on the command line ------------------------------------------------------


def _cli_error(capsys, argv: list[str]) -> str:
    from dimfeat.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dimfeat: error: ")
    return lines[0]


def test_options_after_double_dash_get_the_command_that_works(tmp_path, capsys, cscl):
    """``dimfeat featurize -- x.cif -o out.csv`` suggested ``dimfeat featurize x.cif -o -o
    out.csv``; ``--`` ends the options, and the message says so and moves them before it."""
    from dimfeat.cli import main

    cif = tmp_path / "x.cif"
    cscl.to(filename=str(cif))
    out = tmp_path / "out.csv"
    line = _cli_error(capsys, ["featurize", "--", str(cif), "-o", str(out)])
    assert "'-o' comes after '--', which ends the options" in line
    assert line.endswith(f"put the options before '--': dimfeat featurize -o {out} {cif}")
    assert "-o -o" not in line and not out.exists()
    line = _cli_error(
        capsys, ["featurize", "-o", str(out), "--", str(cif), "--quiet", "--n-jobs", "1"]
    )
    assert "'--quiet' and '--n-jobs' come after '--'" in line
    assert line.endswith(f"dimfeat featurize -o {out} --quiet --n-jobs 1 {cif}")
    line = _cli_error(capsys, ["train", "--", str(cif), "--output=w"])
    assert line.endswith(f"dimfeat train --output=w {cif}")
    # '--' before the inputs, options before it: the standard meaning, which works
    main(["featurize", "-o", str(out), "--quiet", "--n-jobs", "1", "--", str(cif)])
    assert out.read_text().count("\n") == 2  # header and one row


# -- NumPy arrays of sites -----------------------------------------------------------------------


def test_numpy_array_of_structures_split_into_sites_says_so(sample_structures, featurizer):
    """``np.array(structures, dtype=object)`` of structures with as many sites each is a 2-D
    array of sites; it was refused as "numbers are not structures"."""
    import pandas as pd
    from sklearn.base import clone

    same = [s for s in sample_structures if len(s) == 2][:3]
    array = np.array(same, dtype=object)
    assert array.shape == (3, 2)
    fix = r"pd\.Series\(structures\).*np\.empty\(len\(structures\), dtype=object\)"
    message = (
        r"2-D NumPy array of shape \(3, 2\) whose items are pymatgen PeriodicSite objects: "
        r"np\.array\(structures, dtype=object\) splits structures .* into their sites.*" + fix
    )
    with pytest.raises(TypeError, match=message):
        featurizer.transform(array)
    with pytest.raises(TypeError, match=message):
        clone(featurizer).fit(array)
    one_site = np.array([s for s in sample_structures if len(s) == 1][:3], dtype=object)
    with pytest.raises(TypeError, match=r"shape \(3, 1\) whose items are pymatgen PeriodicSite"):
        featurizer.transform(one_site)
    # the fixes the message gives all work
    filled = np.empty(len(same), dtype=object)
    filled[:] = same
    expected = featurizer.transform(same)
    for fixed in (pd.Series(same), filled):
        np.testing.assert_array_equal(featurizer.transform(fixed), expected)
    # numbers keep their own message
    with pytest.raises(TypeError, match="numbers are not structures"):
        featurizer.transform(np.zeros((3, 2)))


def test_numpy_array_of_ase_atoms_split_into_atoms_says_so(featurizer):
    from ase.build import bulk

    array = np.array([bulk("Cu"), bulk("Al")], dtype=object)
    with pytest.raises(TypeError, match=r"whose items are ASE Atom objects.*splits ASE Atoms"):
        featurizer.transform(array)
