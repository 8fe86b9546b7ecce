"""The command line: ``dimfeat train`` and ``dimfeat featurize`` on a tiny CGCNN folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.cli import main
from dimfeat.inputs import InvalidStructureError, load_inputs
from dimfeat.weights import sha256_of

N_STRUCTURES = 16


def _write_cgcnn(folder: Path, structures: list, labels: np.ndarray) -> list[str]:
    """Write structures in the CGCNN layout (CIFs, id_prop.csv, material_id_hash.csv)."""
    folder.mkdir()
    ids = [f"mp-test-{k}" for k in range(len(structures))]
    for k, structure in enumerate(structures):
        CifWriter(structure).write_file(folder / f"{k}.cif")
    (folder / "id_prop.csv").write_text(
        "".join(
            f"{k},{y:.6f},0.0,0.0,{s.volume:.4f},0.0\n"
            for k, (s, y) in enumerate(zip(structures, labels, strict=True))
        )
    )
    (folder / "material_id_hash.csv").write_text("".join(f"{k},{i}\n" for k, i in enumerate(ids)))
    return ids


@pytest.fixture(scope="module")
def cgcnn(tmp_path_factory, sample):
    small = sample[sample["structure"].map(len) <= 6].head(N_STRUCTURES)
    folder = tmp_path_factory.mktemp("cli") / "tiny"
    ids = _write_cgcnn(
        folder, small["structure"].tolist(), small["formation_energy_per_atom"].to_numpy()
    )
    return folder, ids, small["structure"].tolist()


def _train_args(output: Path, data: Path, cache: Path) -> list[str]:
    return [
        "train", str(output), "--data", str(data), "--cache", str(cache),
        "--epochs", "2", "--validation-fraction", "0.25", "--site-budget", "100",
        "--max-atoms", "24", "--n-jobs", "1", "--device", "cpu", "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(cgcnn, tmp_path_factory):
    folder, _, _ = cgcnn
    work = tmp_path_factory.mktemp("train")
    main(_train_args(work / "weights", folder, work / "inputs.npz"))
    return work


def test_train_writes_a_weights_folder_the_featurizer_loads(trained, cgcnn):
    _, ids, structures = cgcnn
    weights = trained / "weights"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in weights.iterdir()}
    config = json.loads((weights / "config.json").read_text())
    assert [r["epoch"] for r in config["training"]["history"]] == [1, 2]
    assert config["training"]["data"]["n_train"] + config["training"]["data"]["n_valid"] == 16
    assert config["inputs"]["max_atoms"] == 24
    featurizer = DeepInfoMaxFeaturizer(weights=str(weights), device="cpu")
    vectors = featurizer.transform(structures)
    assert vectors.shape == (N_STRUCTURES, 128)
    assert np.isfinite(vectors).all()
    untrained = DeepInfoMaxFeaturizer(weights=None, max_atoms=24, device="cpu")
    assert not np.allclose(vectors, untrained.transform(structures), atol=1e-3)

    crystals, extra = load_inputs(trained / "inputs.npz")  # the input cache
    assert len(crystals) == N_STRUCTURES
    assert extra["material_id"].tolist() == ids


@pytest.mark.slow
def test_train_from_the_cache_reproduces_the_weights(trained, cgcnn, capsys):
    folder, _, _ = cgcnn
    capsys.readouterr()
    main(_train_args(trained / "again", folder / "missing", trained / "inputs.npz"))
    out = capsys.readouterr().out
    assert f"loaded {N_STRUCTURES} cached inputs" in out  # the data folder is not read
    assert "epoch   2" in out
    assert sha256_of(trained / "again" / "model.safetensors") == sha256_of(
        trained / "weights" / "model.safetensors"
    )


@pytest.mark.slow
def test_featurize_writes_a_csv_of_128_columns(cgcnn, tmp_path, featurizer):
    folder, ids, structures = cgcnn
    output = tmp_path / "vectors.csv"
    command = [sys.executable, "-m", "dimfeat.cli", "featurize", str(output), "--data",
               str(folder), "--n-jobs", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert f"wrote {N_STRUCTURES} vectors" in done.stdout
    frame = pd.read_csv(output, index_col=0)
    assert frame.shape == (N_STRUCTURES, 128)
    assert frame.columns.tolist() == [f"dim_{i}" for i in range(128)]
    assert frame.index.tolist() == ids
    np.testing.assert_allclose(frame.to_numpy(), featurizer.transform(structures), atol=1e-6)


def test_featurize_bad_structure_fails_or_gives_a_nan_row(tmp_path, cscl):
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    folder = tmp_path / "bad"
    _write_cgcnn(folder, [cscl, alloy], np.array([0.1, 0.2]))
    args = ["featurize", "", "--data", str(folder), "--n-jobs", "1", "--device", "cpu", "--quiet"]
    args[1] = str(tmp_path / "fails.csv")
    with pytest.raises(InvalidStructureError, match="structure 1"):
        main(args)
    args[1] = str(tmp_path / "nan.csv")
    main([*args, "--ignore-errors"])
    frame = pd.read_csv(tmp_path / "nan.csv", index_col=0)
    assert frame.shape == (2, 128)
    assert np.isfinite(frame.iloc[0]).all() and frame.iloc[1].isna().all()


def test_train_without_data_exits_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="--data"):
        main(["train", str(tmp_path / "w"), "--epochs", "1", "--device", "cpu", "--quiet"])


def test_featurize_and_train_read_a_json_gz_file_of_structures(cgcnn, tmp_path, featurizer):
    import gzip

    _, _, structures = cgcnn
    file = tmp_path / "x.json.gz"
    with gzip.open(file, "wt") as fh:
        json.dump([s.as_dict() for s in structures[:8]], fh)
    out = tmp_path / "o.parquet"
    main(["featurize", str(out), "--data", str(file), "--n-jobs", "1", "--device", "cpu",
          "--quiet"])  # fmt: skip
    frame = pd.read_parquet(out)
    assert frame.index.tolist() == [str(k) for k in range(8)]
    np.testing.assert_allclose(frame.to_numpy(), featurizer.transform(structures[:8]), atol=1e-6)
    main(["train", str(tmp_path / "w"), "--data", str(file), "--epochs", "1",
          "--validation-fraction", "0.25", "--site-budget", "100", "--max-atoms", "24",
          "--n-jobs", "1", "--device", "cpu", "--quiet"])  # fmt: skip
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["training"]["data"]["n_train"] + config["training"]["data"]["n_valid"] == 8


def test_train_refuses_a_cache_built_from_other_data_or_settings(trained, cgcnn, tmp_path):
    folder, _, structures = cgcnn
    cache = trained / "inputs.npz"
    with pytest.raises(SystemExit, match=r"other data or settings \(max_atoms"):
        main([*_train_args(tmp_path / "w", folder, cache), "--max-atoms", "30"])
    other = tmp_path / "other"
    _write_cgcnn(other, structures[::-1], np.zeros(len(structures)))
    with pytest.raises(SystemExit, match=r"other data or settings \(data"):
        main(_train_args(tmp_path / "w", other, cache))
    assert not (tmp_path / "w").exists()
    # a cache that does not record what built it is refused too
    crystals, extra = load_inputs(cache)
    from dimfeat.inputs import save_inputs

    save_inputs(tmp_path / "old.npz", crystals, material_id=extra["material_id"])
    with pytest.raises(SystemExit, match="does not record what it was built from"):
        main(_train_args(tmp_path / "w", folder, tmp_path / "old.npz"))
