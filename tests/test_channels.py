"""The context encoder (``distance_input="none"``) and the two-channel model (dimfeat.channels)."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp
from scipy.spatial.transform import Rotation
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.channels import TwoChannelEncoder, combine_channels, load_weights
from dimfeat.encoder import EncoderConfig, SiteNetEncoder
from dimfeat.inputs import build_inputs, collate
from dimfeat.runtime import EncoderRuntime
from dimfeat.weights import InputSettings, WeightsError, read_config, save_pretrained

CONTEXT = EncoderConfig(distance_input="none", global_dim=64)


def _diamond() -> Structure:
    return Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]]
    )  # 8 atoms conventional, 2 primitive


def _graphite() -> Structure:
    return Structure(
        Lattice.hexagonal(2.46, 6.7),
        ["C"] * 4,
        [[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]],
    )


def _rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def _cscl(a: float = 3.0, species=("Na", "Cl")) -> Structure:
    return Structure(Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def _rutile() -> Structure:  # TiO2, 6 atoms
    return Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )


def _anatase() -> Structure:  # TiO2, 12 atoms conventional (6 primitive)
    return Structure.from_spacegroup(
        "I4_1/amd", Lattice.tetragonal(3.78, 9.5), ["Ti", "O"], [[0, 0, 0], [0, 0, 0.2083]]
    )


@pytest.fixture(scope="module")
def context_runtime() -> EncoderRuntime:
    return EncoderRuntime.create(None, seed=3, encoder_config=CONTEXT)


def test_config_default_keeps_old_dict_and_rejects_unknown_input():
    assert "distance_input" not in EncoderConfig().to_dict()  # digests of old folders unchanged
    assert EncoderConfig.from_dict(CONTEXT.to_dict()) == CONTEXT
    with pytest.raises(ValueError, match="distance_input"):
        EncoderConfig(distance_input="angles")
    encoder = SiteNetEncoder(CONTEXT)
    assert encoder.distance_embedding is None
    assert not any("distance" in k for k in encoder.state_dict())


def test_context_vector_is_exactly_a_function_of_composition(context_runtime):
    structures = [
        _diamond(),
        _graphite(),
        _rocksalt(),
        _cscl(),
        _rutile(),
        _anatase(),
        _cscl(species=("K", "Cl")),
    ]
    v = context_runtime.vectors(structures)[0]
    assert v.shape == (7, 64)
    np.testing.assert_array_equal(v[0], v[1])  # diamond, graphite
    np.testing.assert_array_equal(v[2], v[3])  # rock salt, CsCl-type NaCl
    np.testing.assert_array_equal(v[4], v[5])  # rutile, anatase
    assert np.abs(v[3] - v[6]).max() > 1e-3  # NaCl vs KCl
    assert np.abs(v[0] - v[4]).max() > 1e-3
    # ... whatever else is in the call, in any order, and after any distortion
    rng = random.Random(0)
    for _ in range(3):
        picks = [rng.randrange(7) for _ in range(rng.randint(1, 40))]
        others = [structures[i].copy() for i in picks]
        for s in others:
            s.perturb(0.1)
        w = context_runtime.vectors(others)[0]
        np.testing.assert_array_equal(w, v[picks])


def test_context_forward_equals_the_site_path():
    """The composition path computes the same function as encode_local + encode_global."""
    torch.manual_seed(0)
    encoder = SiteNetEncoder(CONTEXT).eval()
    batch = collate([build_inputs(_rocksalt()), build_inputs(_rutile()), build_inputs(_graphite())])
    with torch.no_grad():
        direct = encoder(batch)
        mu, _ = encoder.encode_local(
            batch.site_species, batch.neighbour_species, batch.distances, batch.mask
        )
        via, _ = encoder.encode_global(mu, batch.crystal_index, batch.n_crystals, batch.site_weight)
    torch.testing.assert_close(direct, via, atol=1e-5, rtol=1e-5)


def test_sample_pair_with_equal_reduced_formula(sample_structures, context_runtime):
    formulas = [s.composition.reduced_formula for s in sample_structures]
    seen: dict[str, int] = {}
    pair = None
    for i, f in enumerate(formulas):
        if f in seen and len(sample_structures[i]) != len(sample_structures[seen[f]]):
            pair = (seen[f], i)
            break
        seen.setdefault(f, i)
    if pair is None:  # pragma: no cover - the bundled sample has such pairs
        pytest.skip("no pair of equal reduced formula and different cells in the sample")
    v = context_runtime.vectors([sample_structures[k] for k in pair])[0]
    np.testing.assert_array_equal(v[0], v[1])


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory):
    root = tmp_path_factory.mktemp("channels")
    torch.manual_seed(0)
    save_pretrained(root / "ctx", SiteNetEncoder(CONTEXT), inputs=InputSettings())
    save_pretrained(
        root / "st", SiteNetEncoder(EncoderConfig(global_dim=64)), inputs=InputSettings()
    )
    return combine_channels(root / "ctx", root / "st", root / "two"), root


def test_two_channel_folder_round_trip(two_channel):
    folder, root = two_channel
    encoder, config = load_weights(folder)
    assert isinstance(encoder, TwoChannelEncoder) and encoder.config.global_dim == 128
    sources = {c: config["channels"][c]["source"] for c in ("context", "structure")}
    assert sources["context"]["sha256"] == read_config(root / "ctx")["sha256"]
    assert sources["structure"]["sha256"] == read_config(root / "st")["sha256"]
    assert "dim_ctx_*" in (folder / "README.md").read_text()
    single, _ = load_weights(root / "st")  # single-channel folders load as before
    assert isinstance(single, SiteNetEncoder)


def test_two_channel_folder_is_verified(two_channel, tmp_path):
    folder, _ = two_channel

    for edit in ("sha", "setting", "shape"):
        bad = tmp_path / edit
        shutil.copytree(folder, bad)
        config = json.loads((bad / "config.json").read_text())
        if edit == "sha":
            config["sha256"] = "0" * 64
            match = "sha256"
        elif edit == "setting":
            config["channels"]["structure"]["encoder"]["distance_cutoff"] = 6.0
            match = "settings"
        else:
            config["channels"]["context"]["encoder"]["global_dim"] = 32
            match = "shape"
        (bad / "config.json").write_text(json.dumps(config))
        with pytest.raises(WeightsError, match=match):
            load_weights(bad)
    with pytest.raises(WeightsError, match="two-channel"):
        combine_channels(folder, folder, tmp_path / "nested")


def test_featuriser_channels(two_channel, sample_structures):
    folder, root = two_channel
    structures = sample_structures[:6]
    both = DeepInfoMaxFeaturizer(weights=str(folder))
    labels = both.feature_labels()
    assert labels[:2] == ["dim_ctx_0", "dim_ctx_1"] and labels[64] == "dim_struct_0"
    assert len(labels) == 128
    v = both.transform(structures)
    assert v.shape == (6, 128)
    context = DeepInfoMaxFeaturizer(weights=str(folder), channel="context")
    structure = DeepInfoMaxFeaturizer(weights=str(folder), channel="structure")
    np.testing.assert_array_equal(context.transform(structures), v[:, :64])
    np.testing.assert_array_equal(structure.transform(structures), v[:, 64:])
    assert structure.feature_labels()[0] == "dim_struct_0"
    assert len(context.get_feature_names_out()) == 64
    # the channels are the source folders' vectors
    np.testing.assert_array_equal(
        DeepInfoMaxFeaturizer(weights=str(root / "st")).transform(structures), v[:, 64:]
    )
    single = DeepInfoMaxFeaturizer(weights=str(root / "st"), channel="context")
    with pytest.raises(ValueError, match="two-channel"):
        single.transform(structures)
    assert DeepInfoMaxFeaturizer(weights=str(root / "st")).feature_labels()[0] == "dim_0"


def test_two_channel_invariances(two_channel):
    folder, _ = two_channel
    featurizer = DeepInfoMaxFeaturizer(weights=str(folder))
    base = _rutile()
    base.perturb(0.05, min_distance=0.02)
    rotated = base.copy()
    rotation = Rotation.from_euler("xyz", [20, 35, 50], degrees=True).as_matrix()
    rotated.apply_operation(SymmOp.from_rotation_and_translation(rotation, [0, 0, 0]))
    shuffled = Structure.from_sites(list(reversed(base.sites)))
    supercell = base * (2, 1, 1)
    v = featurizer.transform([base, rotated, shuffled, supercell])
    for row in v[1:]:
        np.testing.assert_allclose(row, v[0], atol=1e-4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_single_composition_set_context_dims_constant_and_mlp_sane(two_channel):
    """Within one composition the context channel is constant (zero variance, so
    StandardScaler leaves it alone) and StandardScaler + MLP stays finite and sane."""
    folder, _ = two_channel
    rng = np.random.default_rng(0)
    structures, y = [], []
    for k in range(40):
        s = _graphite() if k % 2 else _diamond()
        s.scale_lattice(s.volume * (0.9 + 0.2 * rng.random()))
        s.perturb(0.05)
        structures.append(s)
        y.append(s.volume / len(s))
    X = DeepInfoMaxFeaturizer(weights=str(folder)).transform(structures)
    assert np.ptp(X[:, :64], axis=0).max() == 0.0
    scaler = StandardScaler().fit(X)
    np.testing.assert_array_equal(scaler.scale_[:64], 1.0)
    model = make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(64,), max_iter=300, random_state=0)
    )
    model.fit(X[:30, :64], y[:30])
    predicted = model.predict(X[30:, :64])
    assert np.all(np.isfinite(predicted))
    assert np.ptp(predicted) == pytest.approx(0.0, abs=1e-9)  # one composition, one prediction


def test_context_encoder_trains_by_dim_and_stays_invariant(sample_structures):
    """DIM training reaches a context encoder (the critic still reads distances, the encoder
    none), and the trained vector is still exactly a function of the composition."""
    from dimfeat.inputs import build_many
    from dimfeat.training import TrainingConfig, train_dim

    inputs, _ = build_many(sample_structures[:24])
    torch.manual_seed(0)
    encoder = SiteNetEncoder(CONTEXT)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    history, _ = train_dim(
        encoder, inputs, TrainingConfig(epochs=1), torch.device("cpu"), max_primitive_sites=None
    )
    assert np.isfinite(history[-1]["train_loss"])
    assert any(not torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    runtime = EncoderRuntime(encoder.eval())
    v = runtime.vectors([_rutile(), _anatase(), _diamond(), _graphite()])[0]
    np.testing.assert_array_equal(v[0], v[1])
    np.testing.assert_array_equal(v[2], v[3])


def test_cli_combine_channels(two_channel, tmp_path, capsys):
    from dimfeat.cli import main

    _, root = two_channel
    main(["combine-channels", str(root / "ctx"), str(root / "st"), "-o", str(tmp_path / "two")])
    assert "wrote" in capsys.readouterr().out
    _, config = load_weights(tmp_path / "two")
    assert config["architecture"] == "sitenet-dim-two-channel"
    with pytest.raises(SystemExit):
        main(
            ["combine-channels", str(tmp_path / "two"), str(root / "st"), "-o", str(tmp_path / "x")]
        )


def test_two_channel_weights_without_a_recipe_refuse_dim_training(two_channel, sample_structures):
    # fit continues each channel with its recorded recipe; these channels record none
    # (SiteNetRegressor fine-tunes two-channel weights: tests/test_two_channel_product.py)
    folder, _ = two_channel
    with pytest.raises(ValueError, match=r"context channel .* records no training recipe"):
        DeepInfoMaxFeaturizer(weights=str(folder), epochs=1).fit(sample_structures[:4])


@pytest.mark.parametrize("config", [CONTEXT, EncoderConfig(global_dim=64)], ids=["ctx", "str"])
def test_principal_readout_restricts_the_rank_and_keeps_the_context_exact(config, small_structures):
    """The read-out keeps the vector's length, confines it to `rank` principal directions of
    the vectors it was fitted on (the projection of those vectors onto them), and a context
    encoder's vector stays an exact function of the composition."""
    from dimfeat.channels import principal_readout

    torch.manual_seed(5)
    runtime = EncoderRuntime.create(None, seed=5, encoder_config=config)
    structures = small_structures[:40]
    before = runtime.vectors(structures)[0].astype(np.float64)
    record = principal_readout(runtime.encoder, before, rank=6)
    after = runtime.vectors(structures)[0].astype(np.float64)
    assert after.shape == before.shape and record["rank"] == 6 and record["n_structures"] == 40
    assert 0 < record["explained_variance"] < 1
    singular = np.linalg.svd(after - after.mean(0), compute_uv=False)
    assert singular[6] <= 1e-4 * singular[0] and singular[5] > 1e-2 * singular[0]
    mean = before.mean(0)
    _, _, vt = np.linalg.svd(before - mean, full_matrices=False)
    expected = mean + (before - mean) @ vt[:6].T @ vt[:6]
    np.testing.assert_allclose(after, expected, rtol=0, atol=1e-4 * np.abs(before).max())
    if config.distance_input == "none":
        v = runtime.vectors([_diamond(), _graphite(), _rocksalt(), _cscl()])[0]
        np.testing.assert_array_equal(v[0], v[1])
        np.testing.assert_array_equal(v[2], v[3])
    with pytest.raises(ValueError, match="rank must be"):
        principal_readout(runtime.encoder, before, rank=0)
