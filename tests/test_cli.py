"""The command line: ``dimfeat train`` and ``dimfeat featurize`` on tiny inputs written from the
bundled sample, and every command of the command-line page of the docs."""

from __future__ import annotations

import gzip
import io
import json
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import MATMINER, weights_labels  # MATMINER: $DIMFEAT_SHARED_DATA or ../shared/data
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat._version import __version__
from dimfeat.cli import main
from dimfeat.infomax import FALSE_SAMPLE_KINDS
from dimfeat.inputs import load_inputs
from dimfeat.streaming import featurize_to_file, read_features
from dimfeat.weights import sha256_of

N_STRUCTURES = 16
ATOL = 2e-5  # float32; batch composition changes padding widths (docs/reliability.md)
LABELS = weights_labels()  # those of the default weights (dimfeat featurize)
SCHEMA = ["index", "id", *LABELS, "error"]
DOCS = Path(__file__).resolve().parents[1] / "docs"
needs_matbench = pytest.mark.skipif(
    not (MATMINER / "matbench_phonons.json.gz").is_file(),
    reason=f"matbench_phonons.json.gz not found in {MATMINER}",
)
#: Appended to every featurize/train command of the tests: one process, CPU, no progress bar.
QUIET = ["--n-jobs", "1", "--device", "cpu", "--quiet"]


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


def test_train_records_the_objective_settings_and_its_own_command(trained, cgcnn):
    folder, _, _ = cgcnn
    out = trained / "paper-local"
    kinds = "other,polymorph,composition"
    argv = [*_train_args(out, folder, trained / "inputs.npz"), "--local-false-samples", kinds]
    argv += ["--critic", "linear", "--synthetic-weight", "0.5", "--strain-range", "1.01", "1.05"]
    argv += ["--global-trains-local"]
    main(argv)
    training = json.loads((out / "config.json").read_text())["training"]
    settings = training["settings"]
    # the arguments given to main, not the process's own sys.argv (e.g. pytest's)
    assert training["command"] == "dimfeat " + " ".join(argv)
    assert settings["local_false_samples"] == kinds.split(",")
    assert settings["critic"] == "linear" and settings["synthetic_weight"] == 0.5
    assert "each synthetic kind weighted 0.5 of other" in (out / "README.md").read_text()
    assert settings["strain_range"] == [1.01, 1.05]
    assert "strain factors 1.01-1.05" in (out / "README.md").read_text()
    assert settings["global_trains_local"] is True
    assert "the global loss also trains the local encoder" in (out / "README.md").read_text()
    assert settings["false_samples"] == list(FALSE_SAMPLE_KINDS)
    assert f"(local loss: {kinds.replace(',', ', ')})" in (out / "README.md").read_text()
    assert sha256_of(out / "model.safetensors") != sha256_of(
        trained / "weights" / "model.safetensors"
    )
    default = json.loads((trained / "weights" / "config.json").read_text())["training"]
    assert default["settings"]["local_false_samples"] is None
    assert default["settings"]["critic"] == "mlp"
    assert default["settings"]["strain_range"] == [1.05, 1.25]
    assert default["settings"]["global_trains_local"] is False


def test_train_postpool_hidden_sets_the_architecture_the_featurizer_rebuilds(trained, cgcnn):
    folder, _, structures = cgcnn
    out = trained / "wide"
    main([*_train_args(out, folder, trained / "inputs.npz"), "--postpool-hidden", "96", "80"])
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["postpool_hidden"] == [96, 80]
    featurizer = DeepInfoMaxFeaturizer(weights=str(out), device="cpu")
    assert featurizer.transform(structures[:3]).shape == (3, 128)  # loads a [96, 80] state
    default = json.loads((trained / "weights" / "config.json").read_text())
    assert default["encoder"]["postpool_hidden"] == [64]


def _fails(capsys, argv: list[str]) -> str:
    """Run ``dimfeat argv``, check it exits with status 2 and one line on stderr; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dimfeat: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_train_refuses_bad_objective_settings_before_reading_data(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    base = _train_args(tmp_path / "w", missing, tmp_path / "inputs.npz")
    line = _fails(capsys, [*base, "--local-false-samples", "other,strains"])
    assert "local_false_samples must be a non-empty subset" in line and "strains" in line
    line = _fails(capsys, [*base, "--false-samples", "permutation"])
    assert "one element" in line
    assert not (tmp_path / "w").exists() and not (tmp_path / "inputs.npz").exists()


def test_train_refuses_a_cache_built_from_other_data_or_settings(trained, cgcnn, tmp_path, capsys):
    folder, _, structures = cgcnn
    cache = trained / "inputs.npz"
    line = _fails(capsys, [*_train_args(tmp_path / "w", folder, cache), "--max-atoms", "30"])
    assert re.search(r"other data or settings \(max_atoms", line)
    other = tmp_path / "other"
    _write_cgcnn(other, structures[::-1], np.zeros(len(structures)))
    line = _fails(capsys, _train_args(tmp_path / "w", other, cache))
    assert re.search(r"other data or settings \(data", line)
    assert not (tmp_path / "w").exists()
    # a cache that does not record what built it is refused too
    crystals, extra = load_inputs(cache)
    from dimfeat.inputs import save_inputs

    save_inputs(tmp_path / "old.npz", crystals, material_id=extra["material_id"])
    line = _fails(capsys, _train_args(tmp_path / "w", folder, tmp_path / "old.npz"))
    assert "does not record what it was built from" in line


def test_the_cache_follows_the_content_of_the_data_not_its_copy_time(
    trained, cgcnn, tmp_path, capsys
):
    import os
    import shutil

    from dimfeat.inputs import save_inputs

    folder, _, _ = cgcnn
    cache = trained / "inputs.npz"
    copy = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, copy, copy_function=shutil.copy)  # new modification times
    files = sorted(p for p in copy.iterdir() if p.suffix == ".cif")
    os.utime(files[0], ns=(1, 1))
    capsys.readouterr()
    main(_train_args(tmp_path / "w", copy, cache))
    assert f"loaded {N_STRUCTURES} cached inputs" in capsys.readouterr().out
    # one digit of one coordinate changed: same name, size and modification time, other data
    stamp = files[-1].stat().st_mtime_ns
    text = files[-1].read_text()
    digit = re.search(r"\d(?=\s*$)", text.rstrip()).start()
    files[-1].write_text(text[:digit] + str((int(text[digit]) + 1) % 10) + text[digit + 1 :])
    os.utime(files[-1], ns=(stamp, stamp))
    line = _fails(capsys, _train_args(tmp_path / "w2", copy, cache))
    assert re.search(r"other data or settings \(data", line)
    # a cache of an older dimfeat that stamped files by modification time says so
    crystals, extra = load_inputs(cache)
    key = json.loads(str(extra["cache_key"]))
    del key["data"]["stamp"]  # what an older dimfeat wrote: the same fields, stamped by time
    key["data"]["source"] = [folder.name, "folder", "0" * 64]
    old = tmp_path / "by-time.npz"
    save_inputs(
        old, crystals, material_id=extra["material_id"], cache_key=np.array(json.dumps(key))
    )
    line = _fails(capsys, _train_args(tmp_path / "w3", folder, old))
    assert "identified the data by modification time" in line


@needs_matbench
def test_a_matbench_task_given_as_input_identifies_its_cache_by_its_file(tmp_path):
    from dimfeat.training_run import data_identity

    def identity(home):
        return data_identity(["matbench_phonons"], data_home=str(home))

    file = MATMINER / "matbench_phonons.json.gz"
    assert identity(MATMINER)["source"] == [file.name, file.stat().st_size, sha256_of(file)]
    assert identity(tmp_path) is None  # not on this machine: only a cache can stand in


def test_train_refuses_bad_postpool_widths_and_widths_with_weights(trained, tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    base = _train_args(tmp_path / "w", missing, tmp_path / "inputs.npz")
    for widths in (["0"], ["64", "-3"]):
        line = _fails(capsys, [*base, "--postpool-hidden", *widths])
        assert "postpool_hidden must be one or more positive integer widths" in line
    line = _fails(capsys, [*base, "--weights", str(trained / "weights"), "--postpool-hidden", "96"])
    assert "--postpool-hidden sets the architecture of a random encoder" in line
    assert not (tmp_path / "w").exists() and not (tmp_path / "inputs.npz").exists()


def test_train_without_data_exits_with_a_message(tmp_path, capsys):
    line = _fails(capsys, ["train", str(tmp_path / "w"), "--epochs", "1", *QUIET])
    assert "dimfeat train INPUT... -o OUT" in line
    line = _fails(capsys, ["train", "-o", str(tmp_path / "w"), "--epochs", "1", *QUIET])
    assert "give at least one INPUT" in line


@pytest.mark.parametrize(
    "inputs",
    [["structures.tar.gz"], ["cifs/x0.cif", "cifs/x1.cif", "cifs/x2.cif", "cifs/x3.vasp", "a.cif"]],
)
def test_train_reads_the_inputs_featurize_reads(files, inputs, tmp_path, monkeypatch):
    root, expected = files
    monkeypatch.chdir(root)
    main(["train", *inputs, "-o", str(tmp_path / "w"), "--epochs", "1",
          "--validation-fraction", "0.25", "--site-budget", "100", "--max-atoms", "24",
          *QUIET])  # fmt: skip
    data = json.loads((tmp_path / "w" / "config.json").read_text())["training"]["data"]
    assert data["n_train"] + data["n_valid"] == (6 if len(inputs) == 1 else 5)
    assert data["description"] == ", ".join(Path(name).name for name in inputs)
    featurizer = DeepInfoMaxFeaturizer(weights=str(tmp_path / "w"), device="cpu")
    assert featurizer.transform(expected["cifs"][0][:1]).shape == (1, 128)


def test_train_reads_a_json_gz_file_of_structures(cgcnn, tmp_path):
    _, _, structures = cgcnn
    file = tmp_path / "x.json.gz"
    with gzip.open(file, "wt") as fh:
        json.dump([s.as_dict() for s in structures[:8]], fh)
    main(["train", str(tmp_path / "w"), "--data", str(file), "--epochs", "1",
          "--validation-fraction", "0.25", "--site-budget", "100", "--max-atoms", "24",
          *QUIET])  # fmt: skip
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["training"]["data"]["n_train"] + config["training"]["data"]["n_valid"] == 8


# -- dimfeat featurize ---------------------------------------------------------------------------
def _cgcnn_tarball(path: Path, structures: list, ids: list[str]) -> Path:
    """A CGCNN tarball with the two tables after the CIFs (as mp36k is laid out)."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, text: str) -> None:
            data = text.encode()
            info = tarfile.TarInfo(f"set/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for k, s in enumerate(structures):
            add(f"{k}.cif", s.to(fmt="cif"))
        add("id_prop.csv", "".join(f"{k},0.0\n" for k in range(len(structures))))
        add("material_id_hash.csv", "".join(f"{k},{m}\n" for k, m in enumerate(ids)))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample):
    """Inputs of every kind, named as on the command-line page of the docs.

    ``cifs/`` (three CIFs and a ``.vasp`` POSCAR), ``a.cif``, ``b.cif``, ``POSCAR``,
    ``structures.json.gz`` (8 structures, id -> structure) and ``structures.tar.gz`` (6, in
    the CGCNN layout).
    Returns the folder and, per input, its structures and ids.
    """
    small = sample[sample["structure"].map(len) <= 6]
    structures = small["structure"].tolist()[:12]
    mp_ids = [str(i) for i in small["material_id"]][:12]
    root = tmp_path_factory.mktemp("inputs")
    (root / "cifs").mkdir()
    for k in range(3):
        (root / "cifs" / f"x{k}.cif").write_text(structures[k].to(fmt="cif"))
    (root / "cifs" / "x3.vasp").write_text(structures[3].to(fmt="poscar"))
    (root / "cifs" / "notes.txt").write_text("not a structure: left out")
    (root / "a.cif").write_text(structures[4].to(fmt="cif"))
    (root / "b.cif").write_text(structures[5].to(fmt="cif"))
    (root / "POSCAR").write_text(structures[6].to(fmt="poscar"))
    with gzip.open(root / "structures.json.gz", "wt") as fh:
        json.dump({f"s-{k}": structures[k].as_dict() for k in range(4, 12)}, fh)
    _cgcnn_tarball(root / "structures.tar.gz", structures[6:12], mp_ids[6:12])
    expected = {
        "cifs": (structures[:4], ["x0", "x1", "x2", "x3"]),
        "a.cif b.cif POSCAR": (structures[4:7], ["a", "b", "POSCAR"]),
        "structures.json.gz": (structures[4:12], [f"s-{k}" for k in range(4, 12)]),
        "structures.tar.gz": (structures[6:12], mp_ids[6:12]),
    }
    return root, expected


def _read(path: Path) -> pd.DataFrame:
    """Any output of ``dimfeat featurize`` as one DataFrame."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"id": str, "error": object})
    if path.suffix == ".npy":
        rows = pd.read_csv(path.with_suffix(".ids.csv"), dtype={"id": str, "error": object})
        vectors = pd.DataFrame(np.load(path), columns=LABELS)
        return pd.concat([rows[["index", "id"]], vectors, rows[["error"]]], axis=1)
    return read_features(path)


@pytest.mark.parametrize(
    "given", ["cifs", "a.cif b.cif POSCAR", "structures.json.gz", "structures.tar.gz"]
)
def test_featurize_reads_every_input_kind_and_keeps_its_ids(
    given, files, tmp_path, featurizer, monkeypatch
):
    root, expected = files
    structures, ids = expected[given]
    monkeypatch.chdir(root)
    out = tmp_path / "vectors.parquet"
    main(["featurize", *given.split(), "-o", str(out), *QUIET])
    frame = pd.read_parquet(out)
    assert frame.columns.tolist() == SCHEMA
    assert frame["id"].tolist() == ids
    assert frame["index"].tolist() == list(range(len(ids)))
    assert frame["error"].isna().all()
    np.testing.assert_allclose(
        frame[LABELS].to_numpy(), featurizer.transform(structures), atol=ATOL
    )
    assert not (tmp_path / "vectors.parquet.parts").exists()  # the parts are assembled, removed


def test_a_plain_folder_of_cifs_works_in_every_mode(files, tmp_path, featurizer):
    """One reader (dimfeat.sources) under every mode: stream, parts, --split and train."""
    root, expected = files
    structures, ids = expected["cifs"]
    vectors = featurizer.transform(structures)
    for name in ["v.csv", "parts"]:
        main(["featurize", str(root / "cifs"), "-o", str(tmp_path / name), *QUIET])
        frame = _read(tmp_path / name)
        assert frame["id"].tolist() == ids
        np.testing.assert_allclose(frame[LABELS].to_numpy(), vectors, atol=ATOL)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["x0", "x1"], "test": ["x3", "x2"]}))
    main(["featurize", str(root / "cifs"), "--split", str(split), "--part", "test",
          "-o", str(tmp_path / "test.csv"), *QUIET])  # fmt: skip
    frame = _read(tmp_path / "test.csv")
    assert frame["id"].tolist() == ["x3", "x2"]
    np.testing.assert_allclose(frame[LABELS].to_numpy(), vectors[[3, 2]], atol=ATOL)
    main(["train", str(tmp_path / "w"), "--data", str(root / "cifs"), "--epochs", "1",
          "--validation-fraction", "0.25", "--site-budget", "100", "--max-atoms", "24",
          *QUIET])  # fmt: skip
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["training"]["data"]["n_train"] + config["training"]["data"]["n_valid"] == 4


def test_featurize_writes_one_schema_in_every_format(files, tmp_path, featurizer):
    root, expected = files
    structures, ids = expected["cifs"]
    frames = {}
    for name in ["v.parquet", "v.csv", "v.npy", "v"]:
        main(["featurize", str(root / "cifs"), "-o", str(tmp_path / name), "--chunk-size", "3",
              *QUIET])  # fmt: skip
        frames[name] = _read(tmp_path / name)
    for name, frame in frames.items():
        assert frame.columns.tolist() == SCHEMA, name
        assert frame["id"].tolist() == ids and frame["index"].tolist() == [0, 1, 2, 3], name
        assert frame["error"].isna().all(), name
        np.testing.assert_allclose(
            frame[LABELS].to_numpy(), featurizer.transform(structures), atol=ATOL, err_msg=name
        )
    np.testing.assert_array_equal(  # the same vectors, bit for bit, in the binary formats
        frames["v.parquet"][LABELS].to_numpy(), frames["v.npy"][LABELS].to_numpy()
    )
    assert np.load(tmp_path / "v.npy").dtype == np.float32
    # --format states the format; it must agree with the extension
    main(["featurize", str(root / "cifs"), "-o", str(tmp_path / "w.v2"), "--format", "parts",
          *QUIET])  # fmt: skip
    assert read_features(tmp_path / "w.v2")["id"].tolist() == ids


def test_featurize_bad_structure_fails_or_gives_a_nan_row(tmp_path, cscl, capsys):
    alloy = Structure(Lattice.cubic(3.6), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    folder = tmp_path / "bad"
    _write_cgcnn(folder, [cscl, alloy], np.array([0.1, 0.2]))
    line = _fails(capsys, ["featurize", str(folder), "-o", str(tmp_path / "fails.csv"), *QUIET])
    assert "structure 1" in line and "mp-test-1" in line and "--ignore-errors" in line
    assert "--disorder majority" in line and "disorder='majority'" not in line
    main(["featurize", str(folder), "-o", str(tmp_path / "nan.csv"), "--ignore-errors", *QUIET])
    frame = _read(tmp_path / "nan.csv")
    assert frame.columns.tolist() == SCHEMA and frame["id"].tolist() == ["mp-test-0", "mp-test-1"]
    assert np.isfinite(frame[LABELS].iloc[0]).all() and frame[LABELS].iloc[1].isna().all()
    assert pd.isna(frame["error"][0]) and "disordered" in frame["error"][1]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["cifs", "out.csv"], "give the output with -o OUT: dimfeat featurize cifs -o out.csv"),
        (["cifs", "-o", "out.json"], "cannot tell the output format from the extension"),
        (["cifs", "-o", "out.parquet", "--format", "csv"], "--format csv writes a .csv file"),
        (["missing", "-o", "out.csv"], "no such file or folder: missing"),
        (["cifs/notes.txt", "-o", "out.csv"], "is not a folder, a tarball, a .json"),
        (["cifs", "a.cif", "-o", "out.csv"], "must be the only INPUT"),
        (["-o", "out.csv"], "give at least one INPUT"),
        (["a.cif", "--matbench", "matbench_phonons", "-o", "o.csv"], "give no other INPUT"),
        (["a.cif", "-o", "o.csv", "--weights", "./no-such-weights"], "no weights folder"),
    ],
)
def test_featurize_errors_are_one_line_with_exit_status_2(
    argv, says, files, tmp_path, monkeypatch, capsys
):
    root, _ = files
    monkeypatch.chdir(root)
    line = _fails(capsys, ["featurize", *argv, *QUIET])
    assert says in line
    assert not list(tmp_path.iterdir()) and not (root / "out.csv").exists()


def test_an_output_file_dimfeat_did_not_write_is_never_overwritten(files, tmp_path, capsys):
    root, _ = files
    for name in ["v.parquet", "v.npy", "v.csv"]:
        (tmp_path / name).write_text("someone's data")
        line = _fails(capsys, ["featurize", str(root / "a.cif"), "-o", str(tmp_path / name),
                               *QUIET])  # fmt: skip
        assert "dimfeat did not write it" in line or "not written by dimfeat" in line
        assert (tmp_path / name).read_text() == "someone's data"
    # its own output is replaced by a later run
    out = tmp_path / "own.parquet"
    main(["featurize", str(root / "a.cif"), "-o", str(out), *QUIET])
    main(["featurize", str(root / "b.cif"), "-o", str(out), *QUIET])
    assert pd.read_parquet(out)["id"].tolist() == ["b"]


def test_an_interrupted_single_file_run_resumes(files, tmp_path, featurizer, capsys):
    root, expected = files
    structures, ids = expected["cifs"]
    out = tmp_path / "v.parquet"
    # what an interrupted run leaves: the first finished chunk in OUT.parts
    featurize_to_file(root / "cifs", tmp_path / "v.parquet.parts", featurizer, chunk_size=2,
                      limit=2, progress=False)  # fmt: skip
    capsys.readouterr()
    main(["featurize", str(root / "cifs"), "-o", str(out), "--chunk-size", "2", *QUIET])
    assert "2 chunks, 1 already done" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert frame["id"].tolist() == ids
    np.testing.assert_allclose(frame[LABELS].to_numpy(), featurizer.transform(structures),
                               atol=ATOL)  # fmt: skip
    # a refused resume names the command-line flag, not the Python argument
    featurize_to_file(root / "cifs", tmp_path / "v.parquet.parts", featurizer, chunk_size=2,
                      limit=2, progress=False)  # fmt: skip
    line = _fails(capsys, ["featurize", str(root / "cifs"), "-o", str(out), "--chunk-size",
                           "3", *QUIET])  # fmt: skip
    assert "--no-resume" in line and "resume=False" not in line
    main(["featurize", str(root / "cifs"), "-o", str(out), "--chunk-size", "3", "--no-resume",
          *QUIET])  # fmt: skip
    assert pd.read_parquet(out)["id"].tolist() == ids


def test_a_stream_of_more_than_ten_chunks_finishes_reads_back_and_resumes(
    sample, tmp_path, featurizer, capsys
):
    """The manifest's chunk keys once sorted as strings ("10" before "2"): every stream of
    more than 10 chunks finished its work and then failed, and reruns were refused."""
    structures = sample["structure"].tolist()[:13]
    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, structure in enumerate(structures):
        (folder / f"c{k:02d}.cif").write_text(structure.to(fmt="cif"))
    ids = [f"c{k:02d}" for k in range(13)]
    vectors = featurizer.transform(structures)
    for name in ["v.parquet", "v.csv", "parts"]:
        out = tmp_path / name
        main(["featurize", str(folder), "-o", str(out), "--chunk-size", "1", *QUIET])
        frame = _read(out)
        assert frame["id"].tolist() == ids, name
        np.testing.assert_allclose(frame[LABELS].to_numpy(), vectors, atol=ATOL, err_msg=name)
    capsys.readouterr()
    main(["featurize", str(folder), "-o", str(tmp_path / "v.csv"), "--chunk-size", "1", *QUIET])
    assert "13 chunks, 13 already done" in capsys.readouterr().out
    main(["featurize", str(folder), "-o", str(tmp_path / "v.csv"), "--chunk-size", "1",
          "--no-resume", *QUIET])  # fmt: skip
    assert _read(tmp_path / "v.csv")["id"].tolist() == ids


def test_the_older_form_still_works(files, tmp_path, capsys):
    root, expected = files
    out = tmp_path / "v.csv"
    capsys.readouterr()
    main(["featurize", str(out), "--data", str(root / "cifs"), *QUIET])
    assert "is deprecated" in capsys.readouterr().err
    assert _read(out)["id"].tolist() == expected["cifs"][1]


@needs_matbench
def test_matbench_ids_join_the_task_frame(tmp_path, monkeypatch):
    from dimfeat.datasets import matbench_task
    from dimfeat.streaming import iter_chunks

    out = tmp_path / "phonons.parquet"
    main(["featurize", "--matbench", "matbench_phonons", "--data-home", str(MATMINER),
          "-o", str(out), "--limit", "5", *QUIET])  # fmt: skip
    frame = pd.read_parquet(out)
    task = matbench_task("matbench_phonons", data_home=MATMINER)
    assert frame["id"].tolist() == task.df.index[:5].tolist()
    assert frame["id"][0] == "mb-phonons-0001"
    joined = task.df.join(frame.set_index("id"), how="inner")
    assert len(joined) == 5 and np.isfinite(joined[LABELS].to_numpy()).all()
    # a task name given to the streaming reader keeps the same ids
    monkeypatch.setenv("MATMINER_DATA", str(MATMINER))
    assert next(iter_chunks("matbench_phonons", 3)).ids == task.df.index[:3].tolist()


def test_tarball_progress_bar_has_a_total(files, tmp_path, capsys):
    root, _ = files
    capsys.readouterr()
    main(["featurize", str(root / "structures.tar.gz"), "-o", str(tmp_path / "v.csv"),
          "--n-jobs", "1", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert "6/6" in err, err  # a bar without a total shows "6structure"


def test_debug_shows_the_exception(files, tmp_path, monkeypatch):
    root, _ = files
    argv = ["featurize", str(root / "missing"), "-o", str(tmp_path / "v.csv"), *QUIET]
    with pytest.raises(SystemExit, match="no such file or folder"):
        main([*argv, "--debug"])
    monkeypatch.setenv("DIMFEAT_DEBUG", "1")
    with pytest.raises(SystemExit, match="no such file or folder"):
        main(argv)


def test_version_and_help_read_as_plain_text(capsys):
    for argv in (["--version"], ["--help"], ["featurize", "--help"], ["train", "--help"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "``" not in out and ":func:" not in out, argv
        if argv == ["--version"]:
            assert out.strip() == f"dimfeat {__version__}"
        if argv == ["featurize", "--help"]:
            assert "dimfeat featurize INPUT... -o OUT" in out and "Exit status" in out
            # the columns it writes: the default weights' labels (wrapped lines joined)
            text = " ".join(out.split())
            assert f"{LABELS[0]} ... {LABELS[len(LABELS) // 2 - 1]}" in text
            assert f"{LABELS[len(LABELS) // 2]} ... {LABELS[-1]}" in text


@pytest.mark.slow
def test_the_installed_command_exits_with_status_2_and_one_line(tmp_path):
    command = [sys.executable, "-m", "dimfeat.cli", "featurize", str(tmp_path / "missing"),
               "-o", str(tmp_path / "v.csv")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == f"dimfeat: error: no such file or folder: {tmp_path / 'missing'}"


# -- the command-line page of the docs -----------------------------------------------------------
def _page_blocks(page: Path) -> list[tuple[str, str]]:
    """The fenced ``bash`` and ``python`` blocks of a docs page, in order."""
    return re.findall(r"```(bash|python)\n(.*?)```", page.read_text(), flags=re.S)


def test_every_example_of_the_cli_page_runs(files, tmp_path, monkeypatch, capsys):
    """Runs each command and snippet of docs/cli.md as written, in order, in a folder holding
    the inputs it names; featurize/train commands get ``QUIET`` (and a Matbench one
    ``--limit 5``) appended."""
    import shutil

    root, expected = files
    work = tmp_path / "work"
    shutil.copytree(root, work)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MATMINER_DATA", str(MATMINER))
    blocks = _page_blocks(DOCS / "cli.md")
    commands = [c for kind, b in blocks if kind == "bash" for c in b.strip().splitlines()]
    assert len(commands) >= 8 and all(c.startswith("dimfeat ") for c in commands)
    has_matbench = (MATMINER / "matbench_phonons.json.gz").is_file()
    ran = 0
    for kind, block in blocks:
        if kind == "python":
            if "matbench" in block and not has_matbench:
                continue
            exec(compile(block, "docs/cli.md", "exec"), {})
            ran += 1
            continue
        for command in block.strip().splitlines():
            if "--matbench" in command and not has_matbench:
                continue  # only that command: the others of its block still run
            argv = shlex.split(command)[1:]
            if argv[0] in {"featurize", "train"}:
                argv += QUIET + (["--limit", "5"] if "--matbench" in argv else [])
                main(argv)
            else:
                with pytest.raises(SystemExit) as exit_:
                    main(argv)
                assert exit_.value.code == 0
            ran += 1
    assert _read(work / "vectors.parquet")["id"].tolist() == expected["cifs"][1]
    assert _read(work / "vectors.csv")["id"].tolist() == expected["a.cif b.cif POSCAR"][1]
    assert _read(work / "vectors.npy")["id"].tolist() == expected["structures.json.gz"][1]
    assert _read(work / "vectors")["id"].tolist() == expected["structures.tar.gz"][1]
    assert (work / "my-weights" / "model.safetensors").is_file()
    if not has_matbench:
        pytest.skip(f"ran {ran} examples; the Matbench ones need {MATMINER}")


def test_the_cli_page_is_in_the_site_navigation():
    nav = (DOCS.parent / "mkdocs.yml").read_text()
    assert "Command line: cli.md" in nav


def _large_cell(seed: int) -> Structure:
    """A 64-atom rock-salt supercell with every atom moved a little: 64 atoms in the primitive
    cell, more than the 50 the bundled weights were trained on."""
    cell = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])  # fmt: skip
    cell.make_supercell([2, 2, 2])
    rng = np.random.default_rng(seed)
    for k in range(len(cell)):
        cell.translate_sites([k], rng.normal(scale=0.05, size=3), frac_coords=False)
    return cell


def test_a_warning_is_one_plain_line(tmp_path, capsys):
    """The >50-atom warning was printed as a Python warning with its source line; the command
    prints each distinct warning once, as one line ``dimfeat: warning: ...``."""
    for k in range(2):
        CifWriter(_large_cell(k)).write_file(tmp_path / f"big{k}.cif")
    capsys.readouterr()
    main(["featurize", str(tmp_path / "big0.cif"), str(tmp_path / "big1.cif"),
          "-o", str(tmp_path / "v.csv"), *QUIET])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dimfeat: warning: ") and "more than" in lines[0], err
    assert "UserWarning" not in err and "warnings.warn" not in err
    assert len(_read(tmp_path / "v.csv")) == 2
