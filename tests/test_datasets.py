"""Tests of dimfeat.datasets on real data: the bundled sample, mp36k CIFs and Matbench phonons."""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import MATMINER, MP36K  # the data folder: $DIMFEAT_SHARED_DATA, else ../shared/data
from pymatgen.core import Structure

from dimfeat.datasets import (
    CGCNN_LABELS,
    load_cgcnn,
    load_matbench,
    load_sample,
    load_split,
    matbench_task,
)

needs_mp36k = pytest.mark.skipif(
    not (MP36K / "mp36k.tar.gz").is_file() or not (MP36K / "split.json").is_file(),
    reason=f"shared mp36k data (mp36k.tar.gz, split.json) not found in {MP36K}",
)
needs_matminer = pytest.mark.skipif(
    not (MATMINER / "matbench_phonons.json.gz").is_file(),
    reason=f"shared matminer data (matbench_phonons.json.gz) not found in {MATMINER}",
)


# --------------------------------------------------------------------------- bundled sample


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return load_sample()


def test_sample_has_1000_rows_with_finite_labels(sample):
    assert list(sample.columns) == [
        "material_id",
        "structure",
        "formation_energy_per_atom",
        "band_gap",
        "split",
    ]
    assert len(sample) == 1000
    assert sample["material_id"].is_unique
    assert all(isinstance(s, Structure) for s in sample["structure"])
    assert max(len(s) for s in sample["structure"]) <= 50
    for column in ("formation_energy_per_atom", "band_gap"):
        assert sample[column].dtype == np.float64
        assert np.isfinite(sample[column]).all()
    assert (sample["band_gap"] >= 0).all()
    assert sample["formation_energy_per_atom"].between(-6, 6).all()
    assert (sample["split"] == "test").all()


def test_sample_metadata_credits_the_sources(sample):
    meta = sample.attrs["metadata"]
    assert meta["licence"] == "CC BY 4.0"
    assert meta["seed"] == 0
    assert any("Materials Project" in c for c in meta["credit"])
    assert any("CGCNN" in c for c in meta["credit"])


def test_sample_as_arrays_matches_frame(sample):
    structures, y = load_sample(as_frame=False)
    assert isinstance(structures, list) and len(structures) == len(sample)
    assert y.shape == (len(sample),) and y.dtype == np.float64
    np.testing.assert_array_equal(y, sample["formation_energy_per_atom"].to_numpy())
    assert structures[0] == sample["structure"].iloc[0]


@needs_mp36k
def test_sample_is_drawn_from_the_test_split(sample):
    split = load_split(MP36K / "split.json")
    assert set(sample["material_id"]) <= set(split["test"])
    # Kept in split.json order.
    position = {m: i for i, m in enumerate(split["test"])}
    assert sample["material_id"].map(position).is_monotonic_increasing


# --------------------------------------------------------------------------- CGCNN layout


@pytest.fixture(scope="session")
def mini_cgcnn(tmp_path_factory) -> dict:
    """A CGCNN folder and tarball holding the first 8 CIFs of the real mp36k tarball."""
    cifs: dict[str, str] = {}
    tables: dict[str, str] = {}
    with tarfile.open(MP36K / "mp36k.tar.gz") as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if name.endswith(".cif") and len(cifs) < 8:
                cifs[name[: -len(".cif")]] = tar.extractfile(member).read().decode()
            elif name in ("id_prop.csv", "material_id_hash.csv"):
                tables[name] = tar.extractfile(member).read().decode()
    rows = {line.split(",", 1)[0]: line for line in tables["id_prop.csv"].splitlines()}
    hashes = {line.split(",", 1)[0]: line for line in tables["material_id_hash.csv"].splitlines()}
    idx = list(cifs)

    folder = tmp_path_factory.mktemp("cgcnn") / "data"
    folder.mkdir()
    for i, text in cifs.items():
        (folder / f"{i}.cif").write_text(text)
    (folder / "id_prop.csv").write_text("\n".join(rows[i] for i in idx) + "\n")
    (folder / "material_id_hash.csv").write_text("\n".join(hashes[i] for i in idx) + "\n")
    tarball = folder.parent / "mini.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="mini/data")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_sites = [len(Structure.from_str(cifs[i], fmt="cif")) for i in idx]
    return {
        "folder": folder,
        "tarball": tarball,
        "idx": idx,
        "material_ids": [hashes[i].split(",")[1] for i in idx],
        "labels": np.array([[float(v) for v in rows[i].split(",")[1:]] for i in idx]),
        "n_sites": n_sites,
    }


@needs_mp36k
def test_cgcnn_folder_loads_real_cifs_and_labels(mini_cgcnn):
    df = load_cgcnn(mini_cgcnn["folder"])
    assert list(df.columns) == ["material_id", "structure", *CGCNN_LABELS]
    assert df["material_id"].tolist() == mini_cgcnn["material_ids"]
    np.testing.assert_array_equal(df[list(CGCNN_LABELS)].to_numpy(), mini_cgcnn["labels"])
    assert [len(s) for s in df["structure"]] == mini_cgcnn["n_sites"]
    assert df.attrs["n_dropped"] == 0


@needs_mp36k
def test_cgcnn_tarball_equals_folder(mini_cgcnn):
    from_folder = load_cgcnn(mini_cgcnn["folder"])
    from_tar = load_cgcnn(mini_cgcnn["tarball"])
    pd.testing.assert_frame_equal(
        from_tar.drop(columns="structure"), from_folder.drop(columns="structure")
    )
    assert from_tar["structure"].tolist() == from_folder["structure"].tolist()


@needs_mp36k
def test_cgcnn_parallel_parsing_gives_the_same_structures(mini_cgcnn):
    serial = load_cgcnn(mini_cgcnn["tarball"], n_jobs=1)
    parallel = load_cgcnn(mini_cgcnn["tarball"], n_jobs=2)
    assert parallel["structure"].tolist() == serial["structure"].tolist()


@needs_mp36k
def test_cgcnn_ids_select_in_the_given_order(mini_cgcnn):
    wanted = mini_cgcnn["material_ids"][::-2]
    df = load_cgcnn(mini_cgcnn["tarball"], ids=wanted)
    assert df["material_id"].tolist() == wanted
    with pytest.raises(KeyError, match="mp-0-not-an-id"):
        load_cgcnn(mini_cgcnn["folder"], ids=["mp-0-not-an-id"])


@needs_mp36k
def test_cgcnn_max_atoms_drops_explicitly(mini_cgcnn, caplog):
    n_sites = np.array(mini_cgcnn["n_sites"])
    limit = int(np.sort(n_sites)[len(n_sites) // 2])
    expected = [m for m, n in zip(mini_cgcnn["material_ids"], n_sites, strict=True) if n > limit]
    assert expected, "the fixture should hold crystals on both sides of the limit"
    with caplog.at_level("INFO", logger="dimfeat.datasets"):
        df = load_cgcnn(mini_cgcnn["folder"], max_atoms=limit)
    assert max(len(s) for s in df["structure"]) <= limit
    assert len(df) == len(n_sites) - len(expected)
    assert df.attrs["n_dropped"] == len(expected)
    assert df.attrs["dropped_ids"] == expected
    assert f"dropped {len(expected)} of {len(n_sites)}" in caplog.text
    with pytest.raises(ValueError, match="max_atoms"):
        load_cgcnn(mini_cgcnn["folder"], max_atoms=0)


@needs_mp36k
def test_cgcnn_without_hash_file_and_other_label_counts(mini_cgcnn, tmp_path):
    folder = tmp_path / "two_labels"
    folder.mkdir()
    lines = []
    for i, labels in zip(mini_cgcnn["idx"][:3], mini_cgcnn["labels"], strict=False):
        (folder / f"{i}.cif").write_text((mini_cgcnn["folder"] / f"{i}.cif").read_text())
        lines.append(f"{i},{float(labels[0])!r},{float(labels[1])!r}")
    (folder / "id_prop.csv").write_text("\n".join(lines))
    df = load_cgcnn(folder)
    assert list(df.columns) == ["material_id", "structure", "target_0", "target_1"]
    assert df["material_id"].tolist() == mini_cgcnn["idx"][:3]
    np.testing.assert_array_equal(df["target_1"], mini_cgcnn["labels"][:3, 1])


@needs_mp36k
def test_cgcnn_missing_files_name_the_path(mini_cgcnn, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cgcnn(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"id_prop\.csv"):
        load_cgcnn(empty)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "id_prop.csv").write_text((mini_cgcnn["folder"] / "id_prop.csv").read_text())
    first = mini_cgcnn["idx"][0]
    with pytest.raises(FileNotFoundError, match=rf"{first}\.cif"):
        load_cgcnn(partial)
    no_table = tmp_path / "no_table.tar.gz"
    with tarfile.open(no_table, "w:gz") as tar:
        data = b"not a table"
        info = tarfile.TarInfo("x/readme.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(FileNotFoundError, match=r"id_prop\.csv"):
        load_cgcnn(no_table)


# --------------------------------------------------------------------------- split


@needs_mp36k
def test_split_has_disjoint_folds():
    split = load_split(MP36K / "split.json")
    assert set(split) == {"train", "test"}
    assert (len(split["train"]), len(split["test"])) == (29390, 7347)
    assert not set(split["train"]) & set(split["test"])


def test_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split\.json"):
        load_split(tmp_path / "split.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["mp-1", "mp-2"], "test": ["mp-2"]}))
    with pytest.raises(ValueError, match="both folds"):
        load_split(bad)
    bad.write_text(json.dumps({"train": ["mp-1"]}))
    with pytest.raises(ValueError, match="'test'"):
        load_split(bad)


# --------------------------------------------------------------------------- Matbench


@needs_matminer
def test_load_matbench_follows_matminer_data(monkeypatch):
    monkeypatch.setenv("MATMINER_DATA", str(MATMINER))
    df = load_matbench()
    assert list(df.columns) == ["structure", "last phdos peak"]
    assert len(df) == 1265
    assert max(len(s) for s in df["structure"]) == 48
    assert np.isfinite(df["last phdos peak"]).all()


@needs_matminer
def test_load_matbench_data_home_wins_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MATMINER_DATA", str(tmp_path))
    assert len(load_matbench("matbench_phonons", data_home=MATMINER)) == 1265


@needs_matminer
def test_matbench_task_has_the_official_folds(monkeypatch):
    monkeypatch.setenv("MATMINER_DATA", str(MATMINER))
    task = matbench_task("matbench_phonons")
    assert task.folds == [0, 1, 2, 3, 4]
    assert len(task.df) == 1265
    test_ids = [set(task.get_test_data(f, include_target=True)[0].index) for f in task.folds]
    assert sum(len(ids) for ids in test_ids) == 1265
    assert len(set().union(*test_ids)) == 1265
    train_x, train_y = task.get_train_and_val_data(0)
    assert len(train_y) == len(train_x)
    assert len(train_x) + len(test_ids[0]) == 1265
    assert not set(train_x.index) & test_ids[0]


@needs_matminer
def test_matbench_task_with_data_home_restores_the_environment(monkeypatch):
    monkeypatch.delenv("MATMINER_DATA", raising=False)
    task = matbench_task("matbench_phonons", data_home=MATMINER)
    assert len(task.df) == 1265
    assert "MATMINER_DATA" not in os.environ


def test_matbench_missing_file_raises_before_any_download(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="MATMINER_DATA") as info:
        load_matbench("matbench_phonons", data_home=tmp_path)
    assert str(tmp_path) in str(info.value)
    monkeypatch.setenv("MATMINER_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"matbench_phonons\.json\.gz"):
        matbench_task("matbench_phonons")
    assert list(tmp_path.iterdir()) == []


def test_matbench_unknown_names():
    with pytest.raises(KeyError, match="not_a_dataset"):
        load_matbench("not_a_dataset")
    with pytest.raises(KeyError, match=r"Matbench v0\.1"):
        matbench_task("dielectric_constant")


# --------------------------------------------------------------------------- any layout


def test_load_structures_reads_every_layout_with_the_ids_of_the_stream(tmp_path, sample):
    """Random access (load_structures) and the stream (iter_chunks) read one reader's entries."""
    from dimfeat.datasets import load_structures
    from dimfeat.streaming import iter_chunks

    structures = sample["structure"].tolist()[:4]
    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, s in enumerate(structures[:3]):
        (folder / f"c{k}.cif").write_text(s.to(fmt="cif"))
    (folder / "POSCAR").write_text(structures[3].to(fmt="poscar"))
    archive = tmp_path / "cifs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for k, s in enumerate(structures[:3]):
            data = s.to(fmt="cif").encode()
            info = tarfile.TarInfo(f"set/c{k}.cif")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for source, n in [(folder, 4), (archive, 3), (folder / "c1.cif", 1), (structures, 4)]:
        df = load_structures(source)
        streamed = [i for chunk in iter_chunks(source, 2) for i in chunk.ids]
        assert df["material_id"].tolist() == streamed and len(streamed) == n
        assert all(isinstance(s, Structure) for s in df["structure"])
    df = load_structures(folder, ids=["c2", "POSCAR"])
    assert df["material_id"].tolist() == ["c2", "POSCAR"]
    assert df["structure"][0] == structures[2]
    with pytest.raises(KeyError, match="nope"):
        load_structures(archive, ids=["nope"])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_structures(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither id_prop\.csv nor structure files"):
        load_structures(tmp_path / "empty")


def test_parallel_cif_parsing_raises_the_first_bad_file_in_order(monkeypatch):
    """With several workers the error is the first bad file's in file order (as serially),
    whichever worker fails first."""
    from pymatgen.core import Lattice

    from dimfeat import datasets

    rocksalt = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    good = rocksalt.to(fmt="cif").encode()
    data = [good, good, b"not a cif", good, good, b"also not a cif", good]
    names = [f"file{k}.cif" for k in range(len(data))]
    monkeypatch.setattr(datasets, "_CHUNK_SIZE", 2)  # four chunks over two workers
    with pytest.raises(Exception, match=r"file2\.cif"):
        datasets._parse_files(data, names, False, 2)
    parsed = datasets._parse_files([good] * 5, names[:5], False, 2)
    assert [len(s) for s in parsed] == [2] * 5
