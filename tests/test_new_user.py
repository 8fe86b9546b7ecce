"""What a new user trips on: model cards that name the data used, composition features next to
the DIM vector, one kind of id for a Matbench file, a light demo set-up, the data folder of the
tests, and citations of the data behind the bundled weights."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BUNDLED_WEIGHTS, DATA_ENV, MATMINER, weights_labels
from pymatgen.io.cif import CifWriter

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.card import model_card
from dimfeat.cli import main
from dimfeat.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = resolve_weights("sitenet-dim-mp36k")
QUIET = ["--n-jobs", "1", "--device", "cpu", "--quiet"]


# -- model cards of your own weights -------------------------------------------------------------
@pytest.fixture(scope="module")
def own_weights(tmp_path_factory, small_structures):
    """Weights trained for one epoch on a tarball of 12 sample CIFs: not Materials Project data
    as far as the record goes (nothing credits it)."""
    work = tmp_path_factory.mktemp("own")
    tarball = work / "my-crystals.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for k, structure in enumerate(small_structures[:12]):
            cif = work / f"c{k:02d}.cif"
            CifWriter(structure).write_file(cif)
            tar.add(cif, arcname=cif.name)
    main(["train", str(tarball), "-o", str(work / "weights"), "--epochs", "1",
          "--validation-fraction", "0.25", "--site-budget", "100", "--max-atoms", "24",
          *QUIET])  # fmt: skip
    return tarball, work / "weights"


def test_the_card_of_own_weights_names_their_data_not_materials_project(own_weights):
    tarball, weights = own_weights
    card = (weights / "README.md").read_text()
    data = json.loads((weights / "config.json").read_text())["training"]["data"]
    assert data["n_train"] + data["n_valid"] == 12
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert data["files"] == [{"name": tarball.name, "bytes": tarball.stat().st_size, "sha256": sha}]
    assert f"`{tarball.name}` ({tarball.stat().st_size:,} bytes; sha256 `{sha}`)" in card
    assert f"Structures: {data['n_train']} for training, {data['n_valid']} held out" in card
    assert "Materials Project" not in card and "materials-project" not in card
    assert "datasets:" not in card  # no Hub data set is claimed
    assert "Trained on the crystals named under Training data only" in card


def _minutes(value: str, unit: str) -> float:
    return float(value) * (60.0 if unit == "h" else 1.0)


@pytest.mark.parametrize("weights", BUNDLED_WEIGHTS)
def test_the_bundled_card_is_its_config_and_states_the_whole_run(weights):
    folder = resolve_weights(weights)
    config = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    assert card == model_card(config)  # written by the code, from the record
    if "channels" in config:  # one training section per channel, context first
        trainings = [config["channels"][c]["source"]["training"] for c in ("context", "structure")]
    else:
        trainings = [config["training"]]
    runs = re.findall(r"- Epochs run: (\d+) \(maximum (\d+)\); selected epoch: (\d+)", card)
    times = re.findall(
        r"training time ([\d.]+) (min|h) \(the sum of the (?:times of the )?(\d+) epoch[^)]*\)"
        r"; the selected epoch (\d+) was reached after ([\d.]+) (min|h)",
        card,
    )
    assert len(runs) == len(times) == len(trainings)
    for training, (n_run, maximum, chosen), time in zip(trainings, runs, times, strict=True):
        run = training["run_history"]  # every epoch recorded, not only those up to the selected
        epochs_run = training.get("epochs_run") or len(run)
        selected = training["selection"]["epoch"]
        assert (int(n_run), int(maximum), int(chosen)) == (
            epochs_run,
            training["settings"]["epochs"],
            selected,
        )
        total, unit, n_timed, reached, upto, upto_unit = time
        assert int(n_timed) == len(run) and int(reached) == selected
        # rounded to 0.1 of its unit
        assert abs(_minutes(total, unit) - sum(h["seconds"] for h in run) / 60) <= 0.05 * (
            60 if unit == "h" else 1
        )
        upto_min = sum(h["seconds"] for h in run if h["epoch"] <= selected) / 60
        assert abs(_minutes(upto, upto_unit) - upto_min) <= 0.05 * (60 if upto_unit == "h" else 1)
        assert f"{training['data']['n_left_out_large']} with more than 50 atoms" in card
    assert "datasets:\n- materials-project" in card  # the recorded credit names it


# -- citations -----------------------------------------------------------------------------------
def test_citations_of_the_bundled_weights_include_the_materials_project_and_cgcnn(own_weights):
    mp, cgcnn = "doi={10.1063/1.4812323}", "doi={10.1103/PhysRevLett.120.145301}"
    cited = " ".join(DeepInfoMaxFeaturizer().citations())
    assert "@article{jain2013mp" in cited and mp in cited
    assert "@article{xie2018cgcnn" in cited and cgcnn in cited
    for weights in (None, str(own_weights[1])):  # untrained, or trained on other data
        cited = DeepInfoMaxFeaturizer(weights=weights).citations()
        assert len(cited) == 3 and mp not in " ".join(cited)
    assert "@article{jain2013mp" in (BUNDLED / "README.md").read_text()


def test_citation_cff_cites_the_software_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"message", "title", "authors"} <= set(cff) and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["doi"] == "10.1039/d4dd00202d" and paper["journal"] == "Digital Discovery"
    assert (paper["volume"], paper["start"], paper["end"], paper["year"]) == (4, 790, 811, 2025)
    assert {r["doi"] for r in cff["references"]} == {
        "10.1063/1.4812323",
        "10.1103/PhysRevLett.120.145301",
    }
    for entry in [paper, *cff["references"]]:
        assert {"type", "title", "authors"} <= set(entry)


# -- one Matbench file, one kind of id -----------------------------------------------------------
@pytest.mark.skipif(
    not (MATMINER / "matbench_phonons.json.gz").is_file(),
    reason=f"matbench_phonons.json.gz not found in {MATMINER}",
)
def test_a_matbench_file_as_input_gets_the_ids_of_matbench(tmp_path):
    file = MATMINER / "matbench_phonons.json.gz"
    main(["featurize", str(file), "-o", str(tmp_path / "a.csv"), "--limit", "3", *QUIET])
    main(["featurize", "--matbench", "matbench_phonons", "--data-home", str(MATMINER),
          "-o", str(tmp_path / "b.csv"), "--limit", "3", *QUIET])  # fmt: skip
    a, b = (pd.read_csv(tmp_path / name) for name in ("a.csv", "b.csv"))
    assert a["id"].tolist() == b["id"].tolist() == ["mb-phonons-0001", "mb-phonons-0002",
                                                    "mb-phonons-0003"]  # fmt: skip
    labels = [c for c in a.columns if c.startswith("dim_")]
    np.testing.assert_array_equal(a[labels].to_numpy(), b[labels].to_numpy())


def test_a_json_file_of_another_name_keeps_its_positions(tmp_path, nacl, cscl):
    from dimfeat.datasets import load_structures_file

    frame = {"index": [0, 1], "columns": ["structure"],
             "data": [[nacl.as_dict()], [cscl.as_dict()]]}  # fmt: skip
    for name, ids in (
        ("mine.json", ["0", "1"]),
        ("matbench_phonons.json", ["mb-phonons-1", "mb-phonons-2"]),
    ):
        (tmp_path / name).write_text(json.dumps(frame))
        assert load_structures_file(tmp_path / name)["material_id"].tolist() == ids


# -- set-up weight and the data folder of the tests ----------------------------------------------
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_the_runtime_only_and_make_test_the_rest(tmp_path):
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)  # a fresh clone: no .venv

    def dry(target: str) -> str:
        done = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout

    demo, test = dry("demo"), dry("test")
    assert "pip install -q -e .\n" in demo and ".[dev]" not in demo and "matbench" not in demo
    assert "examples/pipeline.py" in demo and "torch==2.13.0" in demo
    for step in ("pip install -q -e .\n", 'pip install -q -e ".[dev]"', "matbench==0.6",
                 "ruff check", "pytest", "mkdocs build"):  # fmt: skip
        assert step in test, step


def test_the_summary_counts_the_tests_skipped_for_missing_data(tmp_path):
    missing = tmp_path / "no-data"
    env = {**os.environ, DATA_ENV: str(missing), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_datasets.py", "-k", "split_has_disjoint or load_matbench_follows"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout
    assert (
        f"2 tests skipped: data folder not found at {missing}; set {DATA_ENV}=/path/to/data"
        in done.stdout
    ), done.stdout


# -- composition features next to the DIM vector ------------------------------------------------
def test_composition_features_combine_with_dim_in_a_feature_union(featurizer, sample_structures):
    from matminer.featurizers.base import MultipleFeaturizer
    from matminer.featurizers.composition import ElementProperty
    from sklearn.base import clone
    from sklearn.pipeline import FeatureUnion

    from dimfeat.baselines import CompositionFeaturizer

    structures = sample_structures[:6]
    magpie = ElementProperty.from_preset("magpie")
    expected = np.array([magpie.featurize(s.composition) for s in structures])
    union = FeatureUnion([("dim", clone(featurizer)), ("magpie", CompositionFeaturizer())])
    X = clone(union).fit_transform(structures)
    assert X.shape == (6, 128 + 132)
    np.testing.assert_array_equal(X[:, 128:], expected)
    np.testing.assert_allclose(X[:, :128], featurizer.transform(structures), atol=2e-5)
    names = union.get_feature_names_out()
    assert names[0] == f"dim__{weights_labels()[0]}"
    assert names[128] == f"magpie__{magpie.feature_labels()[0]}"
    # a matminer MultipleFeaturizer over a structure column works too
    both = MultipleFeaturizer([CompositionFeaturizer(), clone(featurizer)])
    row = both.featurize(structures[0])
    np.testing.assert_array_equal(row[:132], expected[0])
    assert clone(CompositionFeaturizer(preset="deml")).get_params()["preset"] == "deml"
    assert CompositionFeaturizer().citations() == magpie.citations()
    with pytest.raises(ValueError, match="preset"):
        CompositionFeaturizer(preset="nope").fit_transform(structures)
