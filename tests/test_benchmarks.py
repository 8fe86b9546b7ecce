"""Smoke test of the paper benchmark code (benchmarks/paper) on a few bundled crystals."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.paper import features as F  # noqa: E402
from benchmarks.paper import protocol as P  # noqa: E402
from benchmarks.paper import report, representation, tsne  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 30-crystal pool and a 12-crystal test set from the bundled sample, private cache."""
    from dimfeat.datasets import load_sample
    from dimfeat.inputs import build_many

    df = load_sample().iloc[:42]
    structures = list(df["structure"])
    inputs, _ = build_many(structures)
    labels = {k: df[k].to_numpy() for k in ("formation_energy_per_atom", "band_gap")}

    def part(name, sl):
        return F.Dataset(
            name,
            [str(i) for i in df["material_id"].iloc[sl]],
            {k: v[sl] for k, v in labels.items()},
            structures[sl],
            inputs[sl],
            f"tiny {name}",
        )

    cache = tmp_path_factory.mktemp("bench-cache")
    saved = F.CACHE
    F.CACHE = cache
    yield part("pool", slice(0, 30)), part("test", slice(30, 42)), cache
    F.CACHE = saved


def test_dim_features_match_featurizer_and_cache(tiny):
    from dimfeat import DeepInfoMaxFeaturizer

    pool, _, cache = tiny
    X = F.features(pool, "dim", weights="sitenet-dim-mp36k", verbose=False)
    expected = DeepInfoMaxFeaturizer(device="cpu").transform(pool.structures)
    np.testing.assert_allclose(X, expected, atol=1e-4)
    U = F.features(pool, "dim-untrained", verbose=False)
    untrained = DeepInfoMaxFeaturizer(weights=None, device="cpu").transform(pool.structures)
    np.testing.assert_allclose(U, untrained, atol=1e-4)
    files = sorted(p.name for p in cache.rglob("*.npz"))
    assert any(f.startswith("dim-") for f in files) and len(files) == 2
    assert F.cached(pool, "dim", weights="sitenet-dim-mp36k")
    np.testing.assert_array_equal(F.features(pool, "dim", weights="sitenet-dim-mp36k"), X)


def test_baseline_features_resume_from_partial(tiny, monkeypatch):
    pool, _, _ = tiny
    small = F.Dataset("small", pool.ids[:6], {}, pool.structures[:6], pool.inputs[:6])
    monkeypatch.setattr(F, "CHUNK", 4)
    X = F.features(small, "magpie", verbose=False)
    assert X.shape == (6, 132) and np.isfinite(X).all()
    xrd = F.features(small, "xrd", verbose=False)
    assert xrd.shape == (6, 128)


def _write_report(folder, monkeypatch) -> str:
    """Write the report from the result files in ``folder`` into ``folder``; its text."""
    monkeypatch.setattr(report, "RESULTS", folder)
    monkeypatch.setattr(report, "FIGURES", folder)
    monkeypatch.setattr(report, "DOC", folder / "results.md")
    monkeypatch.setattr(report, "SUMMARY", folder / "summary.md")
    report.write()
    return (folder / "results.md").read_text()


def test_protocol_and_report(tiny, tmp_path, monkeypatch):
    pool, test, cache = tiny
    specs = representation.rep_specs(("dim", "dim-untrained", "magpie"))
    checkpoint = P.Checkpoint(cache / "runs" / "tiny.json")
    kwargs = dict(pool=pool, test=test, label_counts=(10, 20), draws=lambda n: 3)
    results, scaling = representation.evaluate(specs, checkpoint=checkpoint, **kwargs)
    cell = results["band_gap"]["mlp"]["dim"]
    assert set(cell) == {"10", "20"} and len(cell["10"]) == 3
    assert scaling["band_gap"]["linear"]["dim-untrained"]["standardised"] is True
    assert "pool_validation_median_mae" in scaling["band_gap"]["linear"]["dim"]
    again, _ = representation.evaluate(specs, checkpoint=P.Checkpoint(checkpoint.path), **kwargs)
    assert again == results
    np.testing.assert_array_equal(P.draw(30, 10, 2), P.draw(30, 10, 2))

    payload = {"mae": results, **representation.describe(specs, pool, test)}
    payload["input_scaling"] = scaling
    (tmp_path / "representation.json").write_text(json.dumps(payload))
    text = _write_report(tmp_path, monkeypatch)
    assert "DIM (trained)" in text and (tmp_path / "representation_boxplots.png").is_file()
    assert "mp36k band gap" in (tmp_path / "summary.md").read_text()


def test_tsne_helpers():
    from pymatgen.core import Lattice, Structure

    cscl = Structure(Lattice.cubic(4.2), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    si = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    assert tsne.halogen_and_metal(cscl) and not tsne.halogen_and_metal(si)
    xy = tsne.embed(np.random.default_rng(0).normal(size=(30, 5)))
    assert xy.shape == (30, 2)


# -- the structure-sensitivity benchmark (benchmarks/paper/geometry.py) ------------------------
def test_geometry_scores_tell_a_composition_fingerprint_from_a_structure_feature():
    from benchmarks.paper import geometry

    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(40), 3)  # 40 families of 3 polymorphs
    composition = rng.normal(size=(40, 5))[group]
    energy = rng.normal(size=40)[group] + 0.3 * rng.normal(size=len(group))
    structure = energy - energy.mean()  # a feature that orders the polymorphs exactly
    # a composition fingerprint: polymorphs coincide, and every pair is a tie (0.5)
    assert geometry.separation(composition, group) == 0.0
    pool_x, pool_y = rng.normal(size=(1200, 5)), rng.normal(size=1200)
    pairs = geometry.ranking_pairs(energy, group)
    assert len(pairs[0]) > 0 and np.all(np.abs(energy[pairs[0]] - energy[pairs[1]]) >= 0.05)
    assert geometry.ranking(pool_x, pool_y, composition, energy, pairs, "ridge") == 0.5
    # a column carrying the energy: polymorphs apart, and a model fitted on it ranks them right
    with_structure = np.column_stack([composition, structure])
    assert geometry.separation(with_structure, group) > 0.05
    pool = np.column_stack([pool_x, pool_y])
    assert geometry.ranking(pool, pool_y, with_structure, energy, pairs, "ridge") > 0.95


def test_random_pair_distance_is_over_random_crystals_not_neighbouring_rows():
    from benchmarks.paper import geometry

    # the family matrix is grouped by family: rows 2k and 2k+1 are polymorphs, here identical
    group = np.repeat(np.arange(500), 2)
    Z = np.random.default_rng(0).normal(size=(500, 128))[group]
    Z = (Z - Z.mean(0)) / Z.std(0)
    # two independent standardised 128-vectors are about sqrt(2 * 128) = 16 apart
    assert 14 < geometry._random_pair_distance(Z) < 18
    assert geometry.separation(Z, group) == 0.0


def test_geometry_prototypes_and_distance_resolution():
    from benchmarks.paper import geometry

    protos = geometry.prototypes()
    assert {len(protos["NaCl rock salt"]), len(protos["NaCl CsCl type"])} == {8, 2}
    volumes = [
        protos[k].volume / len(protos[k]) for k in protos if k.startswith("NaCl") and "a=" not in k
    ]
    np.testing.assert_allclose(volumes, volumes[0], rtol=1e-6)  # one volume per atom
    # the Gaussian basis resolves far distances; the paper's linear input barely does
    archive = ROOT / "benchmarks" / "results" / "archive" / "sitenet-dim-mp36k-linear-2-epochs"
    linear = geometry.distance_resolution(str(archive))
    gaussian = geometry.distance_resolution(None)
    assert linear["5.6 vs 8.0 A"] > 0.9 > 0.5 > gaussian["5.6 vs 8.0 A"]


def test_composition_readout_tells_a_composition_vector_from_noise():
    from benchmarks.release.probe_curve import composition_readout
    from dimfeat.datasets import load_sample
    from dimfeat.elements import element_table, standardisation
    from dimfeat.inputs import build_many

    structures = list(load_sample()["structure"].iloc[:120])
    crystals, _ = build_many(structures)
    mean, std = standardisation()
    table = (element_table() - mean) / std
    cell_means = np.stack([table[c.species[: c.n_sites].astype(int)].mean(0) for c in crystals])
    rng = np.random.default_rng(0)
    # a vector that holds the cell means (plus 20 noise columns) reads them back ...
    holds = np.hstack([cell_means @ rng.normal(size=(9, 9)), rng.normal(size=(120, 20))])
    assert composition_readout(holds, crystals) > 0.99
    # ... one of pure noise does not
    assert composition_readout(rng.normal(size=(120, 29)), crystals) < 0.1


def test_exported_layer_candidates_include_the_featurizer_vector():
    from benchmarks.archive.exported_layer import LAYERS, layers
    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.datasets import load_sample
    from dimfeat.inputs import build_many
    from dimfeat.weights import resolve_weights

    structures = list(load_sample()["structure"].iloc[:6])
    crystals, _ = build_many(structures)
    single = "sitenet-dim-mp36k-single-channel"  # the layers of one Site-Net encoder
    out = layers(str(resolve_weights(single)), crystals, batch_size=4)
    assert set(out) == {*LAYERS, "logvar_global"}
    expected = DeepInfoMaxFeaturizer(single, device="cpu").transform(structures)
    np.testing.assert_allclose(out["mu_global"], expected, rtol=1e-5, atol=1e-6)
    # the exported vector is a linear map of the 64-wide post-pooling layer
    assert out["postpool"].shape == (6, 64) and out["mu_local_mean"].shape == (6, 32)


def test_encoder_variants_compare_against_the_shipped_encoder(tmp_path, capsys):
    """The dropped distance table is measured against the shipped encoder, error and speed."""
    from benchmarks.archive import encoder_variants

    path = tmp_path / "variants.json"
    encoder_variants.main(["--n", "12", "--no-compile", "--json", str(path)])
    out = json.loads(path.read_text())
    table = out["variants"]["distance table"]
    assert out["shipped_local_seconds"] > 0 and table["speed_up"] > 0
    # an approximation: close to the shipped vectors, yet not equal to them
    assert 0 < table["max_relative_difference"] < 1e-3
    assert "distance table:" in capsys.readouterr().out


def test_phonon_claim_is_a_tie_unless_dim_wins_every_paired_fold():
    def reps(dim, magpie):
        return {
            "dim": {"fold_mae": dim, "mean_mae": float(np.mean(dim))},
            "magpie": {"fold_mae": magpie, "mean_mae": float(np.mean(magpie))},
        }

    assert report._phonon_verdict(reps([1, 1, 1], [2, 2, 2])).startswith("yes |")
    mixed = report._phonon_verdict(reps([1, 3, 1], [2, 2, 2]))
    assert mixed.startswith("tie |") and "2 of 3 folds" in mixed
    assert report._phonon_verdict(reps([3, 3, 3], [2, 2, 2])).startswith("no |")
    assert "DIM (trained) 1.0 vs Magpie 2.0" in report._phonon_verdict(reps([1, 1, 1], [2, 2, 2]))


def test_probe_curve_against_compares_absolute_mae_cell_by_cell(tmp_path, capsys):
    from benchmarks.release.probe_curve import against, main

    reference = {"probe": {"a/linear/100": 0.5, "a/mlp/100": 0.4, "b/mlp/1000": 1.0}}
    scores = {"probe": {"a/linear/100": 0.4, "a/mlp/100": 0.44, "b/mlp/1000": 0.9}}
    below, cells, ratio = against(scores, reference)
    assert (below, cells) == (2, 3) and ratio == pytest.approx((0.8 + 1.1 + 0.9) / 3)
    # the command line refuses an epoch the reference curve does not hold, naming what it holds
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"curve": {"epoch-002": reference}}))
    with pytest.raises(SystemExit):
        main([str(ref), "--against", f"{ref}:epoch-009"])
    assert "epoch-002" in capsys.readouterr().err


def test_probe_curve_choice_keeps_the_prototypes_and_every_probe_cell_of_the_untrained_encoder():
    from benchmarks.release.probe_curve import KEPT_PROTOTYPES, choose

    def entry(probe, ranking, proto, band_gap=None):
        geometry = {"ranking_ridge": ranking, "ranking_mlp": ranking}
        if proto is not None:
            geometry["prototypes"] = dict.fromkeys(KEPT_PROTOTYPES, proto)
        cells = {"formation_energy/mlp/1000": probe, "band_gap/mlp/1000": band_gap or probe}
        return {"relative_probe": probe, "geometry": geometry, "probe": cells}

    curve = {
        "epoch-000": entry(1.0, 0.5, 5.0),
        "epoch-001": entry(0.80, 0.6, 2.0),  # best probe, but rock salt and CsCl drew together
        "epoch-002": entry(0.84, 0.6, 6.0, band_gap=1.02),  # better mean, worse band gap
        "epoch-003": entry(0.86, 0.6, 6.0),
        "epoch-004": entry(0.82, 0.4, 9.0),  # ranks polymorphs below the untrained encoder
    }
    assert choose(curve) == "epoch-003"
    # when every epoch that keeps the geometry loses a probe cell, the geometry alone decides
    del curve["epoch-003"]
    assert choose(curve) == "epoch-002"
    # curves scored before the prototypes were recorded are chosen by the rankings alone
    old = {
        k: entry(v["relative_probe"], v["geometry"]["ranking_ridge"], None)
        for k, v in curve.items()
    }
    assert choose(old) == "epoch-001"


def test_bundle_writes_the_chosen_epoch_with_the_whole_run_and_refuses_another_folder(
    small_structures, tmp_path
):
    """bundle_weights copies the chosen epoch's weights and records how many epochs were run,
    also when the later epochs' folders were not kept; a folder that was not scored is refused."""
    import torch

    from benchmarks.release.bundle_weights import bundle
    from dimfeat.encoder import SiteNetEncoder
    from dimfeat.inputs import build_many
    from dimfeat.training import DIMTrainer, SaveEveryEpoch, TrainingConfig, split_validation
    from dimfeat.weights import load_encoder, read_config

    inputs, _ = build_many(small_structures[:40], max_atoms=24)
    train_idx, valid_idx = split_validation(len(inputs), 0.25, seed=0)
    run = tmp_path / "epochs"
    torch.manual_seed(0)
    encoder = SiteNetEncoder()
    config = TrainingConfig(epochs=3, site_budget=200, patience=None)
    save = SaveEveryEpoch(run, {"max_atoms": 24, "symprec": 0.01}, {"command": "dimfeat train"})
    DIMTrainer(encoder, config, torch.device("cpu"), callbacks=[save]).fit(
        [inputs[i] for i in train_idx], [inputs[i] for i in valid_idx]
    )
    sha = {k: read_config(run / f"epoch-{k:03d}")["sha256"] for k in (1, 2, 3)}
    geometry = {"separation": 0.1, "ranking_ridge": 0.5, "ranking_mlp": 0.5}
    entry = {"relative_probe": 1.0, "geometry": geometry, "probe": {"band_gap/mlp/1000": 1.0}}
    curve = {f"epoch-{k:03d}": {**entry, "sha256": sha.get(k)} for k in (0, 1, 2, 3)}
    curve["epoch-002"]["relative_probe"] = 0.9  # the best probe: the chosen epoch
    (run / "probe_curve.json").write_text(json.dumps({"curve": curve}))
    for path in (run / "epoch-003").iterdir():  # the last epoch was scored, then not kept
        path.unlink()
    (run / "epoch-003").rmdir()

    out = bundle(run, tmp_path / "bundled", hardware="2-core CPU", data={"n_train": 30})
    training = read_config(out)["training"]
    assert read_config(out)["sha256"] == sha[2]
    assert training["selection"]["epoch"] == 2
    assert set(training["selection"]["curve"]) == {"0", "1", "2", "3"}
    assert training["epochs_run"] == 3 and len(training["run_history"]) == 2
    assert training["hardware"] == "2-core CPU" and training["data"]["n_train"] == 30
    bundled, _ = load_encoder(out)
    chosen, _ = load_encoder(run / "epoch-002")
    for a, b in zip(bundled.state_dict().values(), chosen.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert "Epochs run: 3" in (out / "README.md").read_text()

    curve["epoch-002"]["sha256"] = sha[1]  # scores of another folder
    (run / "probe_curve.json").write_text(json.dumps({"curve": curve}))
    with pytest.raises(SystemExit, match="not the folder that was scored"):
        bundle(run, tmp_path / "refused")


SINGLE_CHANNEL = "weights/sitenet-dim-mp36k-single-channel"


def _ablated_record(weights: str) -> tuple[dict, dict, dict]:
    """The config, training record and encoder of the encoder the ablation retrains: the
    weights' own, or the structure channel's of two-channel weights."""
    from dimfeat.channels import read_weights_config
    from dimfeat.weights import resolve_weights

    config = read_weights_config(resolve_weights(weights))
    if "channels" in config:
        block = config["channels"]["structure"]
        return config, block["source"]["training"], block["encoder"]
    return config, config["training"], config["encoder"]


@pytest.mark.parametrize("weights", [SINGLE_CHANNEL, "sitenet-dim-mp36k"])
def test_ablation_trains_the_bundled_recipe_with_only_the_other_false_samples(tmp_path, weights):
    """The ablation's dimfeat train command reproduces every recorded setting of the bundled
    weights (of their structure channel, for two-channel weights) but the false samples, and
    their architecture and input settings; it stops at the bundled weights' epoch."""
    from benchmarks.paper import ablation
    from dimfeat import cli
    from dimfeat.training import TrainingConfig

    settings, reference = ablation.recipe(weights)
    bundled, training, encoder = _ablated_record(weights)
    assert settings["epochs"] == training["selection"]["epoch"]
    assert settings["false_samples"] == ["other"] and settings["local_false_samples"] is None
    argv = ablation.command(settings, reference, tmp_path / "x")
    args = cli._parser().parse_args(["train", *argv])
    trained = json.loads(json.dumps(cli._training_config(args).to_dict()))
    assert trained == settings
    recorded = {**TrainingConfig.ADDED_SETTINGS, **training["settings"]}
    assert {k for k in recorded if recorded[k] != trained[k]} == {"false_samples", "epochs"}
    assert args.max_primitive_sites == reference["data"]["max_primitive_sites"]
    assert (args.max_atoms, args.symprec) == (bundled["inputs"]["max_atoms"], 0.01)
    assert args.distance_expansion == encoder["distance_expansion"]
    assert args.global_dim == encoder["global_dim"] and args.part == "train"
    assert args.split.endswith("split.json") and args.inputs[0].endswith("mp36k.tar.gz")
    if "channels" in bundled:  # the structure channel: 64 values, the global loss trains local
        assert args.global_dim == 64 and trained["global_trains_local"] is True
        assert "--global-trains-local" in argv and args.distance_input == "distances"
        context = bundled["channels"]["context"]["source"]["sha256"]
        assert reference["channel"] == "structure" and reference["beside"]["sha256"] == context
    else:  # the command of the earlier single-channel weights, as it was: no later option
        later = {*ablation.IF_NOT_DEFAULT.values(), "--distance-input", "--postpool-hidden"}
        assert not later & set(argv) and "channel" not in reference
    # settings recorded as None: "all pairs" and "all sites" are 0 on the command line ...
    loose = {**settings, "local_pairs": None, "global_sites": None}
    args = cli._parser().parse_args(["train", *ablation.command(loose, reference, tmp_path)])
    config = cli._training_config(args)
    assert config.local_pairs is None and config.global_sites is None
    # ... no patience cannot be said, and neither can another weight decay
    for bad in ({"patience": None}, {"weight_decay": 0.1}):
        with pytest.raises(SystemExit, match="cannot be"):
            ablation.command({**settings, **bad}, reference, tmp_path)
    # an architecture dimfeat train cannot build is refused before any training
    odd = {**reference, "encoder": {**reference["encoder"], "embed_dim": 32}}
    with pytest.raises(SystemExit, match=r"encoder\.embed_dim"):
        ablation.command(settings, odd, tmp_path)


def _stand_in(folder: Path, settings: dict, reference: dict, seed: int = 1, **changes) -> Path:
    """A single-channel folder recording what ``dimfeat train`` records for the ablation's
    command (its own description of the data), with random weights: the trained encoder's
    stand-in."""
    import torch

    from dimfeat.channels import blank_encoder
    from dimfeat.encoder import EncoderConfig
    from dimfeat.weights import save_pretrained

    torch.manual_seed(seed)
    encoder = blank_encoder(EncoderConfig.from_dict(reference["encoder"]))
    history = [{"epoch": e, "seconds": 1.0, "valid_loss": 1.0} for e in range(1, 4)]
    data = {**reference["data"], "description": "mp36k.tar.gz, 'train' part of split.json"}
    record = {"settings": {**settings, **changes}, "data": data, "history": history,
              "hardware": "2-core CPU"}  # fmt: skip
    return save_pretrained(folder, encoder, inputs=reference["inputs"], training=record)


def test_ablation_of_two_channel_weights_trains_the_structure_channel_only(
    tmp_path, monkeypatch, small_structures
):
    """For two-channel weights the trained encoder (here a stand-in, saved where the training
    saves it), given the bundled structure channel's principal read-out, replaces the
    structure channel; the context channel is the bundled one, bit for bit; the folder is
    reused only while it holds exactly those two."""
    import torch

    import dimfeat.cli
    from benchmarks.paper import ablation
    from benchmarks.release import bundle_weights
    from dimfeat.inputs import build_many

    crystals, _ = build_many(small_structures[:40], max_atoms=50)
    monkeypatch.setattr(bundle_weights, "readout_crystals", lambda: (crystals, "40 structures"))
    from dimfeat.channels import TwoChannelEncoder, combine_channels, load_weights
    from dimfeat.weights import load_encoder, resolve_weights

    monkeypatch.setattr(F, "CACHE", tmp_path)
    settings, reference = ablation.recipe("sitenet-dim-mp36k")
    key = F.weights_key("sitenet-dim-mp36k")[:12]
    work = tmp_path / "ablation" / f"{ablation.VARIANT}-of-{key}"
    trained = ablation.encoder_folder(work, settings)
    assert trained == work / "epochs" / "epoch-003"
    _stand_in(trained, settings, reference)

    def no_training(argv):
        raise AssertionError(f"trained again: {argv}")

    monkeypatch.setattr(dimfeat.cli, "main", no_training)
    folder = ablation.train("sitenet-dim-mp36k")
    assert folder == ablation.encoder_folder(work, settings, reference) == work / "two-channel"
    combined, config = load_weights(folder)
    bundled, _ = load_weights(resolve_weights("sitenet-dim-mp36k"))
    alone, _ = load_encoder(trained)
    read_out, read_out_config = load_encoder(work / "ablated-readout")
    rank = config["channels"]["structure"]["source"]["training"]["readout"]["rank"]
    assert read_out_config["training"]["readout"]["rank"] == rank == 32
    assert isinstance(combined, TwoChannelEncoder)
    for mine, theirs in ((combined.context, bundled.context), (combined.structure, read_out)):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    for name, a in alone.state_dict().items():  # the read-out changes global_mu alone
        assert torch.equal(a, read_out.state_dict()[name]) != name.startswith("global_mu")
    assert config["channels"]["context"]["source"]["sha256"] == reference["beside"]["sha256"]
    assert ablation.train("sitenet-dim-mp36k") == folder  # reused: nothing trained or written

    record = ablation.pretraining_record(str(folder))
    assert record["channel"] == "structure" and record["settings"]["false_samples"] == ["other"]
    assert record["epochs"] == 3 and record["beside"]["channel"] == "context"
    assert ablation.pretraining_record("sitenet-dim-mp36k")["settings"]["false_samples"] != [
        "other"
    ]

    # another context channel beside the trained encoder: refused
    context = {**reference, "encoder": reference["beside"]["encoder"]}
    other = _stand_in(tmp_path / "ctx", settings, context)
    combine_channels(other, trained, tmp_path / "wrong-context")
    with pytest.raises(SystemExit, match=r"context\.sha256"):
        ablation.check(tmp_path / "wrong-context", settings, reference)
    # a structure channel trained otherwise: refused, in the encoder folder and in the pair
    beta = _stand_in(tmp_path / "beta", settings, reference, beta=0.1)
    combine_channels(work / "context", beta, tmp_path / "wrong-beta")
    for refused in (beta, tmp_path / "wrong-beta"):
        with pytest.raises(SystemExit, match=r"'beta': \(0.1, 0.01\)"):
            ablation.check(refused, settings, reference)
    # data of another split (by sha256, whatever the words say): refused
    split = {**reference["data"]["split"], "sha256": "0" * 64}
    elsewhere = {**reference, "data": {**reference["data"], "split": split}}
    with pytest.raises(SystemExit, match=r"data\.split"):
        ablation.check(folder, settings, elsewhere)
    # a two-channel folder is not the ablation of single-channel weights
    single = {k: v for k, v in reference.items() if k not in ("channel", "beside")}
    with pytest.raises(SystemExit, match="holds two channels"):
        ablation.check(folder, settings, single)


def test_ablation_refuses_an_encoder_trained_otherwise(tmp_path):
    import torch

    from benchmarks.paper import ablation
    from dimfeat.encoder import EncoderConfig, SiteNetEncoder
    from dimfeat.weights import save_pretrained

    settings = {"epochs": 2, "false_samples": ["other"], "beta": 0.01}
    data = {"n_train": 30, "n_valid": 2}
    torch.manual_seed(0)
    encoder = SiteNetEncoder(EncoderConfig())
    inputs = {"max_atoms": 24, "symprec": 0.01}

    def folder(name, **changes):
        record = {"settings": {**settings, **changes}, "data": data, "history": [{"epoch": 2}]}
        return save_pretrained(tmp_path / name, encoder, inputs=inputs, training=record)

    reference = {"data": data, "encoder": encoder.config.to_dict(), "inputs": inputs}
    ablation.check(folder("same"), settings, reference)
    with pytest.raises(SystemExit, match=r"'beta': \(0.1, 0.01\)"):
        ablation.check(folder("beta", beta=0.1), settings, reference)
    with pytest.raises(SystemExit, match="inputs"):
        ablation.check(
            folder("same"), settings, {**reference, "inputs": {**inputs, "max_atoms": 50}}
        )


def test_ablation_claim_is_called_from_paired_draws():
    worse = {"dim-no-synthetic": {"50": [2, 2, 2, 2]}, "dim-untrained": {"50": [1, 1, 1, 1]}}
    assert report._ablation_claim(worse, "band_gap", "mlp").split(" | ")[1] == "yes"
    tied = {"dim-no-synthetic": {"50": [2, 0, 2, 0]}, "dim-untrained": {"50": [1, 1, 1, 1]}}
    row = report._ablation_claim(tied, "band_gap", "mlp")
    assert row.split(" | ")[1] == "no" and "50% of draws worse, tie" in row


def test_transfer_resumes_only_runs_of_the_same_start_weights():
    from benchmarks.paper import transfer

    runs = [
        {"property": "band_gap", "n_labels": 50, "init": "dim", "seed": 0, "start_sha256": "a"},
        {"property": "band_gap", "n_labels": 50, "init": "random", "seed": 0},  # not recorded
    ]
    assert transfer.is_done(runs, "band_gap|50|dim|0", "a")
    assert not transfer.is_done(runs, "band_gap|100|dim|0", "a")
    with pytest.raises(SystemExit, match="recorded from start weights a, not b"):
        transfer.is_done(runs, "band_gap|50|dim|0", "b")
    with pytest.raises(SystemExit, match="not recorded"):
        transfer.is_done(runs, "band_gap|50|random|0", None)


def test_probe_by_labels_averages_the_two_properties_per_model_and_label_count():
    from benchmarks.release.probe_curve import LABELS, MODELS, PROPERTIES, probe_by_labels

    keys = [f"{p}/{m}/{n}" for p in PROPERTIES for m in MODELS for n in LABELS]
    base = {"probe": dict.fromkeys(keys, 2.0)}
    scores = {"probe": {k: (1.0 if k.startswith("band_gap") else 3.0) for k in keys}}
    scores["probe"]["band_gap/linear/100"] = 4.0
    groups = probe_by_labels(scores, base)
    assert set(groups) == {f"{m}/{n}" for m in MODELS for n in LABELS}
    assert groups["mlp/1000"] == 1.0 and groups["linear/100"] == 1.75


def _append_runs(path: str, first: int) -> None:
    from benchmarks.paper import transfer

    for seed in range(first, first + 20):
        record = {"property": "band_gap", "n_labels": 50, "init": "dim", "seed": seed}
        transfer.append_run(Path(path), record, {"max_steps": 200})


def test_transfer_runs_of_two_writers_land_in_one_file(tmp_path):
    """Two processes appending at once lose no run (the file lock), and a protocol change is
    refused."""
    import multiprocessing

    from benchmarks.paper import transfer

    path = tmp_path / "transfer.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_runs, args=(str(path), k)) for k in (0, 100)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    seeds = sorted(r["seed"] for r in json.loads(path.read_text())["runs"])
    assert seeds == [*range(20), *range(100, 120)]
    with pytest.raises(SystemExit, match="another protocol"):
        transfer.append_run(path, {"seed": 0}, {"max_steps": 100})


def test_paper_claims_are_called_from_paired_draws():
    def mae(dim, other):
        return {"p": {"linear": {"dim": {"50": dim}, "magpie": {"50": other}}}}

    assert (
        report._beats(mae([1, 1, 1, 1], [2, 2, 2, 2]), "p", "linear", "dim", ["magpie"])[0] == "yes"
    )
    verdict, note = report._beats(mae([1, 3, 1, 3], [2, 2, 2, 2]), "p", "linear", "dim", ["magpie"])
    assert verdict == "tie" and "Magpie at 50 (50%)" in note  # better in half of the draws only
    assert (
        report._beats(mae([3, 3, 3, 1], [2, 2, 2, 2]), "p", "linear", "dim", ["magpie"])[0] == "no"
    )


def test_transfer_table_is_written_between_the_markers_only(tmp_path):
    from benchmarks.paper import transfer

    doc = tmp_path / "transfer.md"
    start, end = transfer.MARKERS
    doc.write_text(f"# before\n{start}\nold table\n{end}\nafter\n")
    runs = [
        {"property": "band_gap", "n_labels": 50, "init": init, "seed": seed, "test_mae": mae}
        for seed in (0, 1)
        for init, mae in (("random", 1.0 + seed), ("dim", 0.5 + 2 * seed))
    ]
    transfer.write_table(doc, runs, "2-core CPU")
    text = doc.read_text()
    assert text.startswith("# before\n") and text.endswith(f"{end}\nafter\n")
    assert "old table" not in text and "2-core CPU" in text
    # medians 1.5 (random) and 1.5 (dim); dim wins seed 0 (0.5 < 1.0), loses seed 1 (2.5 > 2.0)
    assert "| 50 | 1.500 [1.250, 1.750] (2) | 1.500 [1.000, 2.000] (2) | 1/2 |" in text
    doc.write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- transfer-table:start -->"):
        transfer.write_table(doc, runs, "")


def test_schedule_table_pairs_each_schedule_with_the_plain_dim_start():
    from benchmarks.paper import transfer

    def run(init, seed, valid, test):
        return {"property": "band_gap", "n_labels": 50, "init": init, "seed": seed,
                "best_valid_mae": valid, "test_mae": test}  # fmt: skip

    runs = [run("dim", 0, 1.0, 1.0), run("dim", 1, 1.0, 1.0), run("random", 0, 0.1, 0.1)]
    assert transfer.schedule_table(runs) == ""  # no schedule run: no table
    # seed 0: lower validation, higher test; seed 1: higher both; seed 2 has no dim run
    runs += [run("dim-warmup", 0, 0.9, 1.1), run("dim-warmup", 1, 1.2, 1.2)]
    runs += [run("dim-warmup", 2, 0.1, 0.1)]
    text = transfer.schedule_table(runs)
    assert "| labels | dim-warmup |" in text and "dim-slow-encoder" not in text
    assert "| 50 | 1/2 / 0/2 |" in text


def test_paired_comparison_pairs_the_common_draws():
    run = {"mae": {"band_gap": {"mlp": {"dim": {"50": [1.0, 2.0, 3.0]}}}}}
    base = {"mae": {"band_gap": {"mlp": {"dim": {"50": [1.5, 1.0]}}}}}
    (row,) = representation.paired_comparison(run, base)
    assert row == "band_gap mlp 50: 1.500 / 1.250 (50% of 2 draws won)"


def test_paired_comparison_names_a_cell_the_baseline_lacks():
    run = {"mae": {"band_gap": {"mlp": {"dim": {"50": [1.0]}}}}}
    with pytest.raises(ValueError, match="band_gap/mlp/50"):
        representation.paired_comparison(run, {"mae": {}})


def test_tradeoff_puts_runs_on_one_footing_and_finds_the_pareto_epochs(tmp_path, capsys):
    from benchmarks.archive import tradeoff
    from benchmarks.release.probe_curve import LABELS, MODELS, PROPERTIES

    def entry(mae, rs_cscl, a_scan, sep, prototypes=True):
        probe = {f"{p}/{m}/{n}": mae for p in PROPERTIES for m in MODELS for n in LABELS}
        geometry = {"separation": sep, "ranking_ridge": 0.5, "ranking_mlp": 0.5}
        if prototypes:
            geometry["prototypes"] = {
                "rock salt vs CsCl (NaCl)": rs_cscl,
                "rock salt a=5.64 vs a=8.00 (NaCl)": a_scan,
            }
        return {"probe": probe, "geometry": geometry, "composition_r2": 0.9}

    reference = tmp_path / "probe_curve_reference.json"
    reference.write_text(json.dumps({"curve": {"epoch-002": entry(0.5, 9, 9, 0.1)}}))
    run = tmp_path / "probe_curve_run.json"
    run.write_text(json.dumps({"curve": {
        "epoch-000": entry(0.6, 5, 5, 0.15),
        "epoch-001": entry(0.4, 1, 1, 0.05),  # best probe: on the front
        "epoch-002": entry(0.5, 10, 10, 0.1),  # more geometry: on the front
        "epoch-003": entry(0.55, 9, 9, 0.09),  # worse than epoch 2 in every score
    }}))  # fmt: skip
    old = tmp_path / "probe_curve_old.json"  # scored before the prototypes: not read
    old.write_text(json.dumps({"curve": {"epoch-000": entry(0.6, 0, 0, 0.1, prototypes=False)}}))
    rows = tradeoff.points([run, old], json.loads(reference.read_text())["curve"]["epoch-002"])
    assert {r["run"] for r in rows} == {"run"} and len(rows) == 4
    assert [round(r["probe"], 6) for r in rows] == [1.2, 0.8, 1.0, 1.1]  # MAE / reference MAE
    assert [r["epoch"] for r in tradeoff.pareto(rows)] == [1, 2]
    out = tmp_path / "tradeoff.json"
    tradeoff.main([str(run), "--reference", f"{reference}:epoch-002", "--json", str(out)])
    assert json.loads(out.read_text())["pareto"] == [["run", 1], ["run", 2]]
    assert "pareto" in capsys.readouterr().out


@pytest.fixture(scope="module")
def channel_folders(tmp_path_factory):
    """Two random single-channel folders (context, structure) and their two-channel folder."""
    import torch

    from dimfeat.channels import combine_channels
    from dimfeat.encoder import EncoderConfig, SiteNetEncoder
    from dimfeat.weights import InputSettings, save_pretrained

    root = tmp_path_factory.mktemp("channels")
    torch.manual_seed(0)
    context = EncoderConfig(distance_input="none", global_dim=64)
    save_pretrained(root / "ctx", SiteNetEncoder(context), inputs=InputSettings())
    save_pretrained(
        root / "st", SiteNetEncoder(EncoderConfig(global_dim=64)), inputs=InputSettings()
    )
    combine_channels(root / "ctx", root / "st", root / "two")
    return {name: str(root / name) for name in ("ctx", "st", "two")}


def test_features_of_a_concatenation_and_of_a_two_channel_folder(tiny, channel_folders):
    """``A+B`` scores A's and B's vectors side by side (cached under both sha256s); a
    two-channel folder scores its 128 values, which are its sources' vectors side by side."""
    pool, _, _ = tiny
    ctx, st, two = channel_folders["ctx"], channel_folders["st"], channel_folders["two"]
    assert F.weights_parts(f"{ctx}+{st}") == [ctx, st]
    assert F.weights_parts(two) == [two]
    both = F.features(pool, "dim", weights=f"{ctx}+{st}", verbose=False)
    a = F.features(pool, "dim", weights=ctx, verbose=False)
    b = F.features(pool, "dim", weights=st, verbose=False)
    np.testing.assert_array_equal(both, np.hstack([a, b]))
    assert F.weights_key(f"{ctx}+{st}") == f"{F.weights_key(ctx)}+{F.weights_key(st)}"
    assert F.cached(pool, "dim", weights=f"{ctx}+{st}")
    X = F.features(pool, "dim", weights=two, verbose=False)
    assert X.shape == (len(pool.ids), 128)
    np.testing.assert_allclose(X, both, atol=1e-6)


def test_geometry_helpers_take_a_concatenation_and_a_two_channel_folder(channel_folders):
    from benchmarks.paper import geometry

    ctx, st, two = channel_folders["ctx"], channel_folders["st"], channel_folders["two"]
    protos = list(geometry.prototypes().values())[:3]
    P = geometry.structure_matrix(protos, "dim", f"{st}+{ctx}")
    assert P.shape == (3, 128)
    np.testing.assert_allclose(geometry.structure_matrix(protos, "dim", two)[:, 64:], P[:, :64])
    # the distance resolution is the structure channel's (the last part of A+B)
    assert geometry.distance_resolution(two) == geometry.distance_resolution(st)
    assert geometry.distance_resolution(f"{ctx}+{st}") == geometry.distance_resolution(st)


def test_probe_curve_scores_weights_specs(tmp_path, monkeypatch, capsys):
    from benchmarks.release import probe_curve

    scored = []

    def fake_score(spec, n_families=None):
        scored.append(spec)
        geometry = {"separation": 0.1, "ranking_ridge": 0.6, "ranking_mlp": 0.7}
        return {"probe": {"a/linear/1000": 0.3}, "composition_r2": 0.9, "geometry": geometry}

    monkeypatch.setattr(probe_curve, "score", fake_score)
    monkeypatch.setattr(probe_curve.F, "weights_key", lambda spec: f"key-{spec}")
    out = tmp_path / "scores.json"
    probe_curve.main(["--concat", "A", "B", "--score", "TWO", "--json", str(out)])
    assert scored == ["TWO", "A+B"]
    record = json.loads(out.read_text())
    assert record["scores"]["A+B"]["sha256"] == "key-A+B"
    assert "A+B: composition R2 0.900" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        probe_curve.main([])


def test_probe_curve_scores_a_run_beside_other_weights(tmp_path, monkeypatch):
    """``--beside CTX`` scores every epoch (and the untrained epoch 0) as ``CTX+epoch``, and a
    curve JSON scored beside other weights is not resumed."""
    import torch

    from benchmarks.release import probe_curve
    from dimfeat.encoder import EncoderConfig, SiteNetEncoder
    from dimfeat.weights import InputSettings, save_pretrained

    run = tmp_path / "run"
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        encoder = SiteNetEncoder(EncoderConfig(global_dim=8))
        save_pretrained(run / f"epoch-{epoch:03d}", encoder, inputs=InputSettings(max_atoms=24))
    scored = []

    def fake_score(spec, n_families=None):
        scored.append(spec)
        probe = {"band_gap/mlp/1000": 1.0 / len(scored)}
        prototypes = dict.fromkeys(probe_curve.KEPT_PROTOTYPES, 1.0)
        geometry = {"separation": 0.1, "ranking_ridge": 0.6, "ranking_mlp": 0.7}
        geometry["prototypes"] = prototypes
        return {"probe": probe, "composition_r2": 0.9, "geometry": geometry}

    monkeypatch.setattr(probe_curve, "score", fake_score)
    monkeypatch.setattr(probe_curve, "relative_probe", lambda scores, reference: 1.0)
    monkeypatch.setattr(probe_curve.F, "weights_key", lambda spec: f"key-{spec}")
    out = tmp_path / "curve.json"
    record = probe_curve.run(run, out, beside="CTX")
    assert scored == [f"CTX+{run / name}" for name in ("epoch-000", "epoch-001", "epoch-002")]
    assert record["beside"] == "CTX" and record["beside_sha256"] == "key-CTX"
    with pytest.raises(SystemExit, match="beside 'CTX', not None"):
        probe_curve.run(run, out)


def test_probe_curve_choice_by_geometry_floors():
    """With floors, an epoch keeps the geometry when its separation and rankings reach them
    (not the untrained encoder's rankings) and the prototype distances are kept; the best probe
    among those is chosen, and without floors the rule falls back to the probe alone."""
    from benchmarks.release.probe_curve import GEOMETRY_FLOORS, KEPT_PROTOTYPES, choose

    def entry(probe, separation, ridge, mlp, prototype=10.0):
        geometry = {"separation": separation, "ranking_ridge": ridge, "ranking_mlp": mlp}
        geometry["prototypes"] = dict.fromkeys(KEPT_PROTOTYPES, prototype)
        return {"relative_probe": probe, "probe": {"c": probe}, "geometry": geometry}

    curve = {
        "epoch-000": entry(1.0, 0.13, 0.80, 0.66, prototype=4.0),
        "epoch-001": entry(0.94, 0.23, 0.56, 0.56),  # best probe, rankings below the floors
        "epoch-002": entry(0.96, 0.28, 0.75, 0.64),  # meets every floor
        "epoch-003": entry(0.95, 0.30, 0.80, 0.70, prototype=3.0),  # loses a prototype
        "epoch-004": entry(0.99, 0.31, 0.82, 0.64),  # meets every floor, worse probe
    }
    assert choose(curve) == "epoch-001"
    assert choose(curve, GEOMETRY_FLOORS) == "epoch-002"


def test_bundle_data_words_replace_the_record_and_measured_facts_cannot(tmp_path):
    from benchmarks.release.bundle_weights import _merge_data

    recorded = {"description": "mp36k.tar.gz, 'train' part of split.json", "n_train": 30}
    given = {"description": "the mp36k train split", "credit": "Materials Project"}
    merged = _merge_data(recorded, given, tmp_path)
    assert merged == {
        "description": "the mp36k train split",
        "credit": "Materials Project",
        "n_train": 30,
    }
    assert _merge_data(recorded, {"n_train": 30}, tmp_path)["n_train"] == 30
    with pytest.raises(SystemExit, match="n_train=31 contradicts"):
        _merge_data(recorded, {"n_train": 31}, tmp_path)


def test_plot_training_draws_each_channel_of_the_bundled_weights(tmp_path):
    """Fig. 6 of two-channel weights: each channel's whole recorded run, its kept epoch marked;
    single-channel weights give the one curve they gave before."""
    pytest.importorskip("matplotlib")
    from benchmarks.paper import plot_training
    from dimfeat.channels import read_weights_config
    from dimfeat.weights import resolve_weights

    config = read_weights_config(resolve_weights("sitenet-dim-mp36k"))
    runs, title = plot_training.curves(config)
    assert list(runs) == ["context", "structure"]
    for name, history in runs.items():
        training = config["channels"][name]["source"]["training"]
        assert [r["epoch"] for r in history] == [r["epoch"] for r in training["run_history"]]
        assert [r["epoch"] for r in history if r["best"]] == [training["selection"]["epoch"]]
        kept = training["selection"]["epoch"]
        assert f"{name}: {len(history)} epochs, epoch {kept} kept" in title
    out = tmp_path / "curves.png"
    plot_training.main(["--out", str(out)])
    assert out.stat().st_size > 0

    single = read_weights_config(SINGLE_CHANNEL)
    runs, title = plot_training.curves(single)
    assert list(runs) == [""] and len(runs[""]) == len(single["training"]["run_history"])
    assert title.startswith(f"{single['name']} ({len(runs[''])} epochs, epoch 2 kept)")
    plot_training.main(["--config", SINGLE_CHANNEL, "--out", str(out)])


def test_weights_summary_describes_each_channel_of_two_channel_weights():
    text = representation.weights_summary("sitenet-dim-mp36k")
    assert text.startswith("context channel trained 3 epoch(s) (epoch 3 selected)")
    assert "; structure channel trained 3 epoch(s) (epoch 3 selected)" in text
    assert "false samples ['permutation', 'polymorph', 'strain']" in text
    single = representation.weights_summary(SINGLE_CHANNEL)
    assert single.startswith("trained 2 epoch(s)") and "channel" not in single


def _archived_sha() -> str:
    return json.loads((Path(SINGLE_CHANNEL) / "config.json").read_text())["sha256"]


def test_results_of_other_weights_are_labelled_with_the_weights_they_are_from(
    tmp_path, monkeypatch
):
    """Sections computed with the archived single-channel weights name that folder and the
    bundled weights' sha256, in results.md and summary.md; sections of the bundled weights
    say so, with no warning."""
    from benchmarks.common import weights_label

    old, current = _archived_sha(), F.weights_key("sitenet-dim-mp36k")
    label = weights_label(old[:16])
    assert label.startswith(f"`{SINGLE_CHANNEL}` (sha256 {old[:16]}...), **not the bundled")
    assert weights_label(current) == f"the bundled `sitenet-dim-mp36k` (sha256 {current}...)"
    assert "no folder of this repository" in weights_label("0123456789abcdef")

    described = f"DIM encoder, weights sitenet-dim-mp36k (sha256 {old[:16]}...): trained"
    mae = {"band_gap": {"linear": {"dim": {"50": [1.0]}, "magpie": {"50": [2.0]}}}}
    rep = {"representations": {"dim": described}, "mae": mae}
    ts = {"weights": f"sitenet-dim-mp36k (sha256 {current}...)"}
    runs = [{"init": "dim", "start_sha256": old}, {"init": "random", "start_sha256": None}]
    assert report.weights_sha(rep) == old[:16] and report.weights_sha(ts) == current
    assert report.transfer_sha({"runs": runs}) == old
    note = "\n".join(report._weights_note({"Fig. 8": old[:16], "Figs 9-10": current}))
    assert "Not every result here was computed with the bundled" in note
    assert f"Fig. 8: `{SINGLE_CHANNEL}`" in note and "Figs 9-10" not in note
    assert report._weights_note({"Figs 9-10": current, "Fig. 7": None}) == []

    # the whole report, from result files only (nothing computed)
    (tmp_path / "transfer.json").write_text(json.dumps({"runs": runs}))
    text = _write_report(tmp_path, monkeypatch)
    assert "Fig. 7" in text and f"- Trained DIM weights: {label}." in text
    assert "Not every result here was computed with the bundled" in text


def test_transfer_stage_keeps_and_labels_the_runs_of_other_weights(tmp_path, monkeypatch):
    """The committed transfer runs start from the archived single-channel weights: run_all
    does not rerun them (a rerun would refuse to mix weights) but rewrites their table, which
    names those weights; runs of the bundled weights are resumed as before."""
    import torch

    from benchmarks.paper import run_all, transfer

    committed = transfer.RESULTS / "paper" / "transfer.json"
    assert transfer.other_starts(committed) == [_archived_sha()]

    doc = tmp_path / "transfer.md"
    doc.write_text(f"{transfer.MARKERS[0]}\n{transfer.MARKERS[1]}\n")
    runs = transfer.load_results(committed)["runs"]
    transfer.write_table(doc, runs, "2-core CPU")
    assert f"DIM starts (dim init and its schedules): `{SINGLE_CHANNEL}`" in doc.read_text()

    calls = []
    monkeypatch.setattr(transfer, "main", lambda argv: calls.append(argv))  # 288 runs of 30 s
    monkeypatch.setattr(report, "write", lambda: None)  # tested above
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # run_all's, for the process
    others = "fast,geometry,one-chemistry,ofm,ablation,ofm-phonons"
    run_all.main(["--skip", others])
    assert calls == [["plot"]]

    current = json.loads(
        (transfer.ROOT / "weights" / "sitenet-dim-mp36k" / "config.json").read_text()
    )["sha256"]
    (tmp_path / "paper").mkdir()
    bundled = [{**r, "start_sha256": current} if r["init"].startswith("dim") else r for r in runs]
    (tmp_path / "paper" / "transfer.json").write_text(json.dumps({"runs": bundled}))
    monkeypatch.setattr(transfer, "RESULTS", tmp_path)
    calls.clear()
    run_all.main(["--skip", others])
    assert calls == [["run"], ["plot"]]


def test_card_evaluation_writes_the_measured_table_into_config_and_card(tmp_path, classic):
    """The evaluation block is built from results of exactly this folder's tensors (others are
    refused), the folder still verifies and gives the same vectors, and the card shows it."""
    import shutil

    from benchmarks.release import card_evaluation
    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.weights import read_config, resolve_weights

    folder = tmp_path / "w"
    shutil.copytree(resolve_weights("sitenet-dim-mp36k"), folder)
    sha = read_config(folder)["sha256"]
    rng = np.random.default_rng(0)

    def payload(weights_sha):
        cells = {
            rep: {n: list(rng.uniform(0.1, 1.0, 5)) for n in card_evaluation.LABEL_COUNTS}
            for rep in ("dim", "dim-untrained", "magpie")
        }
        mae = {p: {m: cells for m in card_evaluation.MODELS} for p in card_evaluation.UNITS}
        description = f"DIM encoder, weights w (sha256 {weights_sha[:16]}...): trained"
        return {"representations": {"dim": description}, "mae": mae}

    evaluation = card_evaluation.summary(payload(sha), sha, payload("ab" * 32), "old")
    assert len(evaluation["rows"]) == 12 and evaluation["header"][-2:] == [
        "old",
        "draws beating old",
    ]
    before = DeepInfoMaxFeaturizer(str(folder)).fit_transform([classic["NaCl"]])
    card_evaluation.write(folder, evaluation)
    assert read_config(folder)["evaluation"]["rows"] == evaluation["rows"]
    after = DeepInfoMaxFeaturizer(str(folder)).fit_transform([classic["NaCl"]])
    np.testing.assert_array_equal(before, after)
    card = (folder / "README.md").read_text()
    assert (
        "## Evaluation" in card
        and "| formation energy (eV/atom) | LinearRegression | 100 |" in card
    )
    with pytest.raises(SystemExit, match="not this folder's"):
        card_evaluation.summary(payload("cd" * 32), sha)


@pytest.mark.parametrize("weights", ["sitenet-dim-mp36k", "sitenet-dim-mp36k-single-channel"])
def test_a_malformed_evaluation_block_is_refused(tmp_path, weights):
    import shutil

    from dimfeat.weights import WeightsError, read_config, resolve_weights

    folder = tmp_path / "w"
    shutil.copytree(resolve_weights(weights), folder)
    config = json.loads((folder / "config.json").read_text())
    config["evaluation"] = {"header": ["a"], "rows": "not a list"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="'evaluation' must be an object"):
        read_config(folder)


def test_worker_timeline_splits_a_call_into_parts_that_add_up_to_its_wall_time(
    sample_structures,
):
    from benchmarks.perf import worker_timeline as W
    from dimfeat import DeepInfoMaxFeaturizer
    from dimfeat.inputs.build import chunk_bounds
    from dimfeat.worker_vectors import EncoderPayload

    structures = list(sample_structures[:96])
    runtime = DeepInfoMaxFeaturizer(device="cpu").get_runtime()
    payload = EncoderPayload.of(runtime.encoder)
    for rule in (chunk_bounds, W.guided_bounds):
        bounds = rule(len(structures), 2)
        call = W.one_call(structures, runtime, payload, 2, bounds)
        spans = call["spans"]
        assert call["chunks"] == len(bounds) == sum(len(v) for v in spans.values())
        assert call["workers_used"] == len(spans) in (1, 2)
        # each worker's tasks lie within the call, one after another
        for tasks in spans.values():
            assert 0 < tasks[0][0] and tasks[-1][1] < call["wall_s"]
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(tasks))
            assert all(start < end for start, end in tasks)
        parts = call["start_s"] + call["busy_s"] + call["gaps_s"] + call["tail_s"]
        assert parts == pytest.approx(call["wall_s"], abs=1e-6)
        assert 0 < call["task_cpu_s"] <= call["task_s"] * 1.05
    sizes = [len(b) for b in W.guided_bounds(1000, 2)]
    assert sizes[0] == 125 and sizes[-1] < 32 and sum(sizes) == 1000
    assert all(a >= b for a, b in itertools.pairwise(sizes[:-1]))  # never growing


def test_encoder_time_child_saves_the_vectors_it_timed(sample_structures, tmp_path):
    import pickle

    from benchmarks.perf import encoder_time
    from dimfeat import DeepInfoMaxFeaturizer

    stored = tmp_path / "structures.pkl"
    stored.write_bytes(pickle.dumps(list(sample_structures[:12])))
    seconds = encoder_time.run_child(None, stored, tmp_path / "v.npy")  # a fresh interpreter
    assert seconds > 0
    saved = np.load(tmp_path / "v.npy")
    expected = DeepInfoMaxFeaturizer(device="cpu").transform(sample_structures[:12])
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-6)
    stored.write_bytes(pickle.dumps(["not a structure"]))
    with pytest.raises(RuntimeError, match="child failed"):
        encoder_time.run_child(None, stored, tmp_path / "w.npy")


def test_the_gpu_benchmark_checks_itself_on_the_cpu_and_otherwise_wants_a_gpu(tmp_path):
    """A smoke test of the script where there is no GPU: with --allow-cpu it compares CPU
    vectors with CPU vectors (equal by construction); what a GPU changes is checked on a GPU
    (tests/test_cuda.py). Its measure of change does tell crystals apart."""
    import torch

    from benchmarks.perf import gpu

    path = tmp_path / "gpu.json"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            gpu.main(["--steps", "vectors", "--json", str(path)])
        assert not path.exists()
    gpu.main(["--allow-cpu", "--steps", "vectors", "--n-jobs", "1", "--json", str(path)])
    result = json.loads(path.read_text())
    assert result["device"] in ("cpu", "cuda") and result["machine"]["cores"] > 0
    checked = result["vectors"]
    assert checked["n"] == 1000 and checked["n_jobs_1"]["same"]
    assert checked["n_jobs_1"]["max"] <= gpu.TOLERANCE
    # the measure tells crystals apart: a crystal's vector against another's is far off
    vectors = np.arange(12, dtype=float).reshape(3, 4) + 1
    assert gpu.relative_change(vectors[::-1], vectors).max() > 0.5
    assert gpu.relative_change(vectors, vectors).max() == 0
