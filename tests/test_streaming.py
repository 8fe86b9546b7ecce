"""Streaming featurisation: chunked reading, incremental writing, resuming, the CLI."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest

from dimfeat.featurizer import DeepInfoMaxFeaturizer
from dimfeat.streaming import featurize_to_file, iter_chunks, read_features

N = 12
ATOL = 2e-5  # float32; batch composition changes padding widths (docs/reliability.md)


@pytest.fixture(scope="module")
def sample():
    from dimfeat.datasets import load_sample

    df = load_sample().iloc[:N]
    return list(df["structure"]), [str(i) for i in df["material_id"]]


@pytest.fixture(scope="module")
def featurizer():
    return DeepInfoMaxFeaturizer(device="cpu")


@pytest.fixture(scope="module")
def expected(sample, featurizer):
    return featurizer.transform(sample[0])


def _cgcnn_tarball(path, structures, ids, bad_at=None):
    """A CGCNN tarball laid out like mp36k: CIFs first, the two tables at the end."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name, text):
            data = text.encode()
            info = tarfile.TarInfo(f"set/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for k, s in enumerate(structures):
            add(f"{k}.cif", "not a cif" if k == bad_at else s.to(fmt="cif"))
        add("id_prop.csv", "".join(f"{k},{k * 0.1}\n" for k in range(len(structures))))
        add("material_id_hash.csv", "".join(f"{k},{m}\n" for k, m in enumerate(ids)))
    return path


@pytest.fixture(scope="module")
def tarball(sample, tmp_path_factory):
    return _cgcnn_tarball(tmp_path_factory.mktemp("tar") / "set.tar.gz", *sample)


def test_tarball_to_parquet_parts_matches_transform(tarball, sample, featurizer, expected):
    out = tarball.parent / "parts"
    summary = featurize_to_file(tarball, out, featurizer, chunk_size=5, progress=False)
    assert (summary.n_rows, summary.n_chunks, summary.n_skipped_chunks) == (N, 3, 0)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["chunk_size"] == 5
    frame = read_features(out)
    assert frame["id"].tolist() == sample[1]
    assert frame["index"].tolist() == list(range(N))
    np.testing.assert_allclose(frame[featurizer.feature_labels()].to_numpy(), expected, atol=ATOL)


def test_chunks_are_lazy_and_bounded(tarball):
    chunks = list(iter_chunks(tarball, 5))
    assert [len(c.ids) for c in chunks] == [5, 5, 2]
    assert [c.start for c in chunks] == [0, 5, 10]
    assert len(chunks[1].load()) == 5
    assert [len(c.ids) for c in iter_chunks(tarball, 5, limit=7)] == [5, 2]
    with pytest.raises(ValueError, match="chunk_size"):
        next(iter_chunks(tarball, 0))


class _Interrupted(KeyboardInterrupt):
    pass


class _StopsAfter(DeepInfoMaxFeaturizer):
    """Simulates a crash: raises on the call after ``calls_left`` successful ones."""

    calls_left = 1

    def featurize_many(self, *args, **kwargs):
        if type(self).calls_left == 0:
            raise _Interrupted
        type(self).calls_left -= 1
        return super().featurize_many(*args, **kwargs)


def test_resume_skips_finished_chunks(tarball, featurizer, expected, tmp_path):
    out = tmp_path / "parts"
    crashing = _StopsAfter(device="cpu")
    with pytest.raises(_Interrupted):
        featurize_to_file(tarball, out, crashing, chunk_size=5, progress=False)
    first = out / "part-00000.parquet"
    assert first.is_file() and not (out / "part-00001.parquet").exists()
    stamp = first.stat().st_mtime_ns
    summary = featurize_to_file(tarball, out, featurizer, chunk_size=5, progress=False)
    assert summary.n_skipped_chunks == 1 and summary.n_rows == N
    assert first.stat().st_mtime_ns == stamp  # not redone
    frame = read_features(out)
    np.testing.assert_allclose(frame[featurizer.feature_labels()].to_numpy(), expected, atol=ATOL)
    # other settings: refuse to mix, unless starting again
    with pytest.raises(ValueError, match="other settings"):
        featurize_to_file(tarball, out, featurizer, chunk_size=4, progress=False)
    again = featurize_to_file(tarball, out, featurizer, chunk_size=4, resume=False, progress=False)
    assert again.n_skipped_chunks == 0 and len(list(out.glob("part-*.parquet"))) == 3


def test_csv_append_and_resume_truncates_partial_chunk(sample, featurizer, expected, tmp_path):
    out = tmp_path / "vectors.csv"
    featurize_to_file(sample[0], out, featurizer, chunk_size=5, limit=5, progress=False)
    with out.open("a") as fh:
        fh.write("5,5,0.1,0.2")  # a chunk cut off mid-write
    summary = featurize_to_file(sample[0], out, featurizer, chunk_size=5, progress=False)
    assert summary.n_skipped_chunks == 1
    frame = read_features(out)
    assert len(frame) == N and frame["id"].tolist() == [str(i) for i in range(N)]
    np.testing.assert_allclose(frame[featurizer.feature_labels()].to_numpy(), expected, atol=ATOL)


def test_bad_cif_gives_error_row_with_ignore_errors(sample, featurizer, expected, tmp_path):
    tar = _cgcnn_tarball(tmp_path / "bad.tar.gz", *sample, bad_at=3)
    with pytest.raises(ValueError, match=r"structure 3 \(id " + sample[1][3]):
        featurize_to_file(tar, tmp_path / "strict", featurizer, chunk_size=5, progress=False)
    summary = featurize_to_file(
        tar, tmp_path / "lenient", featurizer, chunk_size=5, progress=False, ignore_errors=True
    )
    assert summary.n_errors == 1
    frame = read_features(tmp_path / "lenient")
    vectors = frame[featurizer.feature_labels()].to_numpy()
    assert np.isnan(vectors[3]).all() and "could not parse" in frame["error"][3]
    keep = [k for k in range(N) if k != 3]
    np.testing.assert_allclose(vectors[keep], expected[keep], atol=ATOL)
    assert frame["error"][keep].isna().all()


def test_folder_of_cifs_and_series(sample, featurizer, expected, tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, s in enumerate(sample[0][:4]):
        (folder / f"x{k}.cif").write_text(s.to(fmt="cif"))
    summary = featurize_to_file(folder, tmp_path / "out", featurizer, chunk_size=3, progress=False)
    assert summary.n_rows == 4
    frame = read_features(tmp_path / "out")
    assert frame["id"].tolist() == ["x0", "x1", "x2", "x3"]
    np.testing.assert_allclose(
        frame[featurizer.feature_labels()].to_numpy(), expected[:4], atol=ATOL
    )
    series = pd.Series(sample[0][:3], index=["a", "b", "c"])
    assert [c.ids for c in iter_chunks(series, 2)] == [["a", "b"], ["c"]]


def test_matbench_file(featurizer, tmp_path):
    from conftest import MATMINER

    file = MATMINER / "matbench_phonons.json.gz"
    if not file.is_file():
        pytest.skip(f"{file} not present")
    summary = featurize_to_file(
        file, tmp_path / "mb", featurizer, chunk_size=4, limit=6, progress=False
    )
    assert summary.n_rows == 6
    frame = read_features(tmp_path / "mb")
    assert frame["id"].tolist() == [f"mb-phonons-{i:04d}" for i in range(1, 7)]  # Matbench's
    assert np.isfinite(frame[featurizer.feature_labels()].to_numpy()).all()


def test_cli_streams_and_resumes(tarball, tmp_path, capsys):
    from dimfeat.cli import main

    out = tmp_path / "cli"
    args = ["featurize", str(out), "--data", str(tarball), "--chunk-size", "5", "--quiet"]
    main([*args, "--device", "cpu"])
    assert "0 already done" in capsys.readouterr().out
    main([*args, "--device", "cpu"])
    assert "3 already done" in capsys.readouterr().out
    assert len(read_features(out)) == N


# -- a resume must prove that the finished chunks belong to this run -------------------------------
def _labels(featurizer):
    return featurizer.feature_labels()


def test_resume_refuses_other_structures_in_memory(sample, featurizer, expected, tmp_path):
    structures = sample[0]
    out = tmp_path / "parts"
    featurize_to_file(structures[:6], out, featurizer, chunk_size=3, progress=False)
    with pytest.raises(ValueError, match=r"other structures.*resume=False.*--no-resume"):
        featurize_to_file(structures[6:], out, featurizer, chunk_size=3, progress=False)
    featurize_to_file(structures[6:], out, featurizer, chunk_size=3, resume=False, progress=False)
    frame = read_features(out)
    np.testing.assert_allclose(frame[_labels(featurizer)].to_numpy(), expected[6:], atol=ATOL)


def test_resume_refuses_a_shorter_or_reordered_input(sample, featurizer, tmp_path):
    structures = sample[0]
    out = tmp_path / "parts"
    featurize_to_file(structures[:9], out, featurizer, chunk_size=3, progress=False)
    with pytest.raises(ValueError, match="longer input"):
        featurize_to_file(structures[:6], out, featurizer, chunk_size=3, progress=False)
    with pytest.raises(ValueError, match="other structures"):
        featurize_to_file(structures[:9][::-1], out, featurizer, chunk_size=3, progress=False)
    # the same structures under other ids are another input too
    series = pd.Series(structures[:9], index=[f"x{k}" for k in range(9)])
    with pytest.raises(ValueError, match="other structures or ids"):
        featurize_to_file(series, out, featurizer, chunk_size=3, progress=False)


def test_resume_refuses_other_weights_seed_or_retrained_folder(sample, tmp_path):
    structures = sample[0][:4]
    out = tmp_path / "parts"
    seed0 = DeepInfoMaxFeaturizer(weights=None, device="cpu", random_state=0)
    featurize_to_file(structures, out, seed0, chunk_size=2, progress=False)
    seed1 = DeepInfoMaxFeaturizer(weights=None, device="cpu", random_state=1)
    with pytest.raises(ValueError, match=r"other settings \(encoder_sha256\).*--no-resume"):
        featurize_to_file(structures, out, seed1, chunk_size=2, progress=False)
    # weights retrained (here: replaced) in the same folder, under the same name
    folder = tmp_path / "weights"
    DeepInfoMaxFeaturizer(device="cpu").save_pretrained(str(folder))
    out2 = tmp_path / "parts2"
    bundled = DeepInfoMaxFeaturizer(weights=str(folder), device="cpu")
    featurize_to_file(structures, out2, bundled, chunk_size=2, progress=False)
    seed0.save_pretrained(str(folder))
    again = DeepInfoMaxFeaturizer(weights=str(folder), device="cpu")
    with pytest.raises(ValueError, match="encoder_sha256"):
        featurize_to_file(structures, out2, again, chunk_size=2, progress=False)
    with pytest.raises(ValueError, match=r"max_atoms|inputs"):
        featurize_to_file(
            structures,
            out2,
            DeepInfoMaxFeaturizer(weights=str(folder), device="cpu", max_atoms=20),
            chunk_size=2,
            progress=False,
        )


def test_resume_refuses_a_changed_cif(sample, featurizer, tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for k, s in enumerate(sample[0][:4]):
        (folder / f"x{k}.cif").write_text(s.to(fmt="cif"))
    out = tmp_path / "out.csv"
    featurize_to_file(folder, out, featurizer, chunk_size=2, progress=False)
    (folder / "x1.cif").write_text(sample[0][5].to(fmt="cif"))
    with pytest.raises(ValueError, match=r"chunk 0 .*source changed.*--no-resume"):
        featurize_to_file(folder, out, featurizer, chunk_size=2, progress=False)


def test_a_chunk_cut_by_limit_is_completed_by_a_larger_limit(
    sample, featurizer, expected, tmp_path
):
    for out in (tmp_path / "parts", tmp_path / "vectors.csv"):
        first = featurize_to_file(sample[0], out, featurizer, chunk_size=5, limit=3, progress=False)
        assert first.n_rows == 3 and len(read_features(out)) == 3
        assert not read_features(out).attrs["complete"]
        summary = featurize_to_file(
            sample[0], out, featurizer, chunk_size=5, limit=8, progress=False
        )
        assert summary.n_rows == 8 and summary.n_skipped_chunks == 0
        summary = featurize_to_file(sample[0], out, featurizer, chunk_size=5, progress=False)
        assert (summary.n_rows, summary.n_skipped_chunks) == (N, 1)
        frame = read_features(out)
        assert frame["index"].tolist() == list(range(N)) and frame.attrs["complete"]
        np.testing.assert_allclose(frame[_labels(featurizer)].to_numpy(), expected, atol=ATOL)
        with pytest.raises(ValueError, match=r"more than limit=4.*--no-resume"):
            featurize_to_file(sample[0], out, featurizer, chunk_size=5, limit=4, progress=False)


def test_non_utf8_cif_is_an_error_row_with_ignore_errors(sample, featurizer, tmp_path, capsys):
    from dimfeat.cli import main

    folder = tmp_path / "d"
    folder.mkdir()
    for k in (0, 1):
        (folder / f"{k}.cif").write_text(sample[0][k].to(fmt="cif"))
    (folder / "2.cif").write_bytes(b"data_x\n\xff")
    out = tmp_path / "o"
    main(["featurize", str(out), "--data", str(folder), "--chunk-size", "2", "--ignore-errors",
          "--device", "cpu", "--quiet"])  # fmt: skip
    assert "1 errors" in capsys.readouterr().out
    frame = read_features(out)
    assert frame["id"].tolist() == ["0", "1", "2"]
    assert "not UTF-8" in frame["error"][2] and frame["error"][:2].isna().all()
    with pytest.raises(ValueError, match=r"structure 2 \(id 2\).*not UTF-8"):
        featurize_to_file(folder, tmp_path / "strict", featurizer, chunk_size=2, progress=False)


@pytest.mark.parametrize("layout", ["list", "frame"])
def test_a_json_gz_file_of_structures_streams(sample, featurizer, expected, tmp_path, layout):
    import gzip

    structures, ids = sample[0][:5], sample[1][:5]
    pairs = list(zip(ids, structures, strict=True))
    if layout == "list":
        content = [s.as_dict() for s in structures]
        want_ids = [str(k) for k in range(5)]
    else:  # matminer's layout (pandas "split"), with a material_id column
        content = {
            "index": list(range(5)),
            "columns": ["material_id", "structure", "e_form"],
            "data": [[i, s.as_dict(), 0.1 * k] for k, (i, s) in enumerate(pairs)],
        }
        want_ids = ids
    file = tmp_path / "my_structures.json.gz"  # not the name of a matminer dataset
    with gzip.open(file, "wt") as fh:
        json.dump(content, fh)
    featurize_to_file(file, tmp_path / "out", featurizer, chunk_size=2, progress=False)
    frame = read_features(tmp_path / "out")
    assert frame["id"].tolist() == want_ids
    np.testing.assert_allclose(frame[_labels(featurizer)].to_numpy(), expected[:5], atol=ATOL)


def test_files_dimfeat_did_not_write_are_never_deleted(sample, featurizer, tmp_path):
    structures = sample[0][:4]
    out = tmp_path / "spark"
    out.mkdir()
    foreign = out / "part-00000-1a2b-c000.snappy.parquet"
    foreign.write_bytes(b"PAR1 somebody else's data")
    for resume in (True, False):
        with pytest.raises(ValueError, match=r"did not write.*part-00000-1a2b"):
            featurize_to_file(structures, out, featurizer, chunk_size=2, resume=resume,
                              progress=False)  # fmt: skip
    assert foreign.read_bytes() == b"PAR1 somebody else's data"
    # a dimfeat output into which a foreign file was dropped later
    mine = tmp_path / "mine"
    featurize_to_file(structures, mine, featurizer, chunk_size=2, progress=False)
    (mine / "part-00007.parquet").write_bytes(b"not ours")
    for resume in (True, False):
        with pytest.raises(ValueError, match=r"did not write.*part-00007"):
            featurize_to_file(structures, mine, featurizer, chunk_size=2, resume=resume,
                              progress=False)  # fmt: skip
    assert (mine / "part-00007.parquet").read_bytes() == b"not ours"
    # a CSV without a dimfeat manifest is not overwritten
    csv = tmp_path / "table.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="dimfeat did not write it"):
        featurize_to_file(structures, csv, featurizer, chunk_size=2, progress=False)
    assert csv.read_text() == "a,b\n1,2\n"


def test_a_manifest_naming_files_outside_the_output_is_refused(sample, featurizer, tmp_path):
    victim = tmp_path / "victim.parquet"
    victim.write_bytes(b"keep me")
    out = tmp_path / "parts"
    featurize_to_file(sample[0][:4], out, featurizer, chunk_size=2, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["chunks"]["1"]["file"] = "../victim.parquet"
    manifest["pending"] = "../victim.parquet"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"damaged.*--no-resume"):
        featurize_to_file(sample[0][:4], out, featurizer, chunk_size=2, progress=False)
    with pytest.raises(ValueError, match="damaged"):
        read_features(out)
    # starting again deletes only the parts the manifest proves are dimfeat's
    with pytest.raises(ValueError, match=r"did not write.*part-00001"):
        featurize_to_file(sample[0][:4], out, featurizer, chunk_size=2, resume=False,
                          progress=False)  # fmt: skip
    assert victim.read_bytes() == b"keep me" and (out / "part-00001.parquet").is_file()


def test_read_features_csv_returns_only_finished_chunks(sample, featurizer, expected, tmp_path):
    out = tmp_path / "vectors.csv"
    crashing = _StopsAfter(device="cpu")
    _StopsAfter.calls_left = 1
    with pytest.raises(_Interrupted):
        featurize_to_file(sample[0], out, crashing, chunk_size=5, progress=False)
    with out.open("a") as fh:  # the crash came while the next chunk was being appended
        fh.write("5,x5,0.1,0.2\n6,x6,0.3")
    frame = read_features(out)
    assert frame["index"].tolist() == list(range(5)) and not frame.attrs["complete"]
    np.testing.assert_allclose(frame[_labels(featurizer)].to_numpy(), expected[:5], atol=ATOL)
    # rows changed after they were written are refused, not returned
    data = out.read_bytes()
    out.write_bytes(data.replace(b"0.", b"1.", 1))
    with pytest.raises(ValueError, match="changed after dimfeat wrote them"):
        read_features(out)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        read_features(tmp_path / "other.csv")


def test_a_changed_part_is_refused(sample, featurizer, tmp_path):
    out = tmp_path / "parts"
    featurize_to_file(sample[0][:4], out, featurizer, chunk_size=2, progress=False)
    other = tmp_path / "other"
    featurize_to_file(sample[0][4:8], other, featurizer, chunk_size=2, progress=False)
    (out / "part-00001.parquet").write_bytes((other / "part-00001.parquet").read_bytes())
    with pytest.raises(ValueError, match="was changed after dimfeat wrote it"):
        read_features(out)
    with pytest.raises(ValueError, match=r"changed after dimfeat wrote it.*--no-resume"):
        featurize_to_file(sample[0][:4], out, featurizer, chunk_size=2, progress=False)


def test_in_memory_cif_text_and_paths_are_read_and_bad_items_named(
    sample, featurizer, expected, tmp_path
):
    structures = sample[0][:4]
    path = tmp_path / "third.cif"
    path.write_text(structures[2].to(fmt="cif"))
    held = [structures[0].to(fmt="cif"), structures[1].as_dict(), path, structures[3]]
    chunks = list(iter_chunks(held, chunk_size=3))
    assert [type(s).__name__ for c in chunks for s in c.load()] == ["Structure"] * 4
    out = tmp_path / "held.csv"
    featurize_to_file(held, out, featurizer, chunk_size=3, progress=False)
    frame = read_features(out)
    np.testing.assert_allclose(
        frame[featurizer.feature_labels()].to_numpy(), expected[:4], atol=ATOL
    )
    held[1] = "missing.cif"
    with pytest.raises(ValueError, match=r"structure 1 \(id 1\): no such file"):
        featurize_to_file(held, tmp_path / "strict.csv", featurizer, progress=False)
    featurize_to_file(
        held, tmp_path / "lenient.csv", featurizer, progress=False, ignore_errors=True
    )
    frame = read_features(tmp_path / "lenient.csv")
    assert np.isnan(frame[featurizer.feature_labels()].to_numpy()[1]).all()
    assert "no such file" in frame["error"][1]


@pytest.mark.parametrize("suffix, n", [(".csv", 1_001), ("", 120)])  # parquet: 20 ms a part
def test_more_than_a_thousand_chunks_read_back_and_resume(sample, featurizer, tmp_path, suffix, n):
    """Chunk keys are decimal strings: "10" must not sort before "2" (a stream of 11+ chunks
    once finished its work and then called its own manifest damaged)."""
    structures = [sample[0][k % 3] for k in range(n)]
    ids = [f"s{k}" for k in range(len(structures))]
    source = pd.Series(structures, index=ids)
    out = tmp_path / f"many{suffix}"
    first = featurize_to_file(source, out, featurizer, chunk_size=1, progress=False)
    assert first.n_chunks == n and first.n_skipped_chunks == 0
    frame = read_features(out)
    assert len(frame) == n and frame.attrs["complete"]
    assert frame["index"].tolist() == list(range(n))
    assert frame["id"].astype(str).tolist() == ids
    np.testing.assert_allclose(
        frame.filter(like="dim_").to_numpy()[n - 3 :], featurizer.transform(structures[n - 3 :]),
        atol=ATOL,
    )
    again = featurize_to_file(source, out, featurizer, chunk_size=1, progress=False)
    assert again.n_skipped_chunks == n and again.n_rows == n
