"""The Site-Net encoder: shapes, configuration, masking of padded atoms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dimfeat.encoder import EncoderConfig, SiteNetEncoder, mlp
from dimfeat.inputs import Batch, build_inputs, collate


@pytest.fixture(scope="module")
def encoder() -> SiteNetEncoder:
    torch.manual_seed(0)
    return SiteNetEncoder().eval()


@pytest.fixture(scope="module")
def batch(cscl, srtio3, zno) -> Batch:
    return collate([build_inputs(s) for s in (cscl, srtio3, zno)])


def test_shapes(encoder, batch):
    with torch.no_grad():
        mu_local, logvar_local = encoder.encode_local(
            batch.site_species, batch.neighbour_species, batch.distances, batch.mask
        )
        mu_global, logvar_global = encoder.encode_global(
            mu_local, batch.crystal_index, batch.n_crystals
        )
        vectors = encoder(batch)
    n_sites = int(batch.n_sites.sum())
    assert mu_local.shape == logvar_local.shape == (n_sites, 32)
    assert mu_global.shape == logvar_global.shape == (3, 128)
    torch.testing.assert_close(vectors, mu_global)
    assert torch.isfinite(vectors).all()


def test_global_dim_is_a_parameter(batch):
    torch.manual_seed(0)
    small = SiteNetEncoder(EncoderConfig(global_dim=16, local_dim=8)).eval()
    with torch.no_grad():
        assert small(batch).shape == (3, 16)


def test_config_round_trips_through_json_dict():
    config = EncoderConfig(value_hidden=(32, 48), global_dim=64)
    data = config.to_dict()
    assert data["value_hidden"] == [32, 48]
    assert EncoderConfig.from_dict(data) == config
    with pytest.raises(TypeError):
        EncoderConfig.from_dict({**data, "unknown": 1})


def test_mlp_layers():
    layers = [type(m).__name__ for m in mlp([9, 64, 1], final_activation=False)]
    assert layers == ["Linear", "Mish", "LayerNorm", "Linear"]
    layers = [type(m).__name__ for m in mlp([1, 64])]
    assert layers == ["Linear", "Mish", "LayerNorm"]


def _with_padding_column(batch: Batch, species: int, distance: float) -> Batch:
    """The same batch with one extra, masked-out atom column holding real-looking values."""
    rows = batch.distances.shape[0]
    fields = dict(batch.__dict__)
    fields["neighbour_species"] = torch.cat(
        [batch.neighbour_species, torch.full((rows, 1), species)], dim=1
    )
    fields["neighbour_site"] = torch.cat([batch.neighbour_site, torch.zeros(rows, 1).long()], 1)
    fields["distances"] = torch.cat([batch.distances, torch.full((rows, 1), distance)], dim=1)
    fields["mask"] = torch.cat([batch.mask, torch.zeros(rows, 1, dtype=torch.bool)], dim=1)
    return Batch(**fields)


@pytest.mark.parametrize(("species", "distance"), [(26, 1.0), (1, 0.0), (92, 40.0)])
def test_padded_atoms_never_change_a_vector(encoder, batch, species, distance):
    padded = _with_padding_column(batch, species, distance)
    with torch.no_grad():
        torch.testing.assert_close(encoder(padded), encoder(batch), rtol=0, atol=1e-6)
    # ...and unmasking that column does change them (the check can fail)
    padded.mask[:, -1] = True
    with torch.no_grad():
        assert (encoder(padded) - encoder(batch)).abs().max() > 1e-4


def test_batch_neighbours_do_not_change_a_vector(encoder, cscl, srtio3, nacl):
    alone = collate([build_inputs(cscl)])
    mixed = collate([build_inputs(s) for s in (srtio3, cscl, nacl)])
    assert mixed.distances.shape[1] >= alone.distances.shape[1]
    with torch.no_grad():
        torch.testing.assert_close(encoder(mixed)[1], encoder(alone)[0], rtol=0, atol=1e-5)


def test_encoder_output_depends_on_species_and_geometry(encoder, cscl):
    crystal = build_inputs(cscl)
    # Cs and Cl swapped everywhere is the same crystal (both sites have the same geometry);
    # K in place of Cs is another one.
    swapped = dataclasses.replace(crystal, species=crystal.species[::-1].copy())
    potassium = dataclasses.replace(
        crystal, species=np.where(crystal.species == 55, 19, crystal.species).astype(np.int16)
    )
    scaled = dataclasses.replace(crystal, distances=crystal.distances * 1.1)
    with torch.no_grad():
        base = encoder(collate([crystal]))
        assert (encoder(collate([scaled])) - base).abs().max() > 1e-4
        torch.testing.assert_close(encoder(collate([swapped])), base, rtol=0, atol=1e-5)
        assert (encoder(collate([potassium])) - base).abs().max() > 1e-4


def test_distance_expansion_options_and_the_legacy_default():
    from dimfeat.encoder import EncoderConfig, GaussianBasis

    # a config written before the option existed describes the paper's linear input
    legacy = {k: v for k, v in EncoderConfig().to_dict().items() if k != "distance_expansion"}
    assert EncoderConfig.from_dict(legacy).distance_expansion == "linear"
    assert EncoderConfig().distance_expansion == "gaussian"
    with pytest.raises(ValueError, match="distance_expansion"):
        EncoderConfig(distance_expansion="rbf")
    # each Gaussian peaks (value 1) at its centre; neighbours are one width away
    basis = GaussianBasis(5, 8.0)
    values = basis(torch.tensor([0.0, 2.0, 8.0]))
    torch.testing.assert_close(
        values[:, 0], torch.tensor([1.0, np.exp(-0.5), np.exp(-8.0)]).float()
    )
    assert values.argmax(1).tolist() == [0, 1, 4]
    # the two inputs give different embeddings of the same distances
    torch.manual_seed(0)
    linear = SiteNetEncoder(EncoderConfig(distance_expansion="linear"))
    assert linear.expand_distances(torch.ones(3, 4)).shape == (3, 4, 1)
    assert SiteNetEncoder().expand_distances(torch.ones(3, 4)).shape == (3, 4, 32)


def test_chunked_sites_give_the_vectors_of_the_whole_batch(encoder, batch, monkeypatch):
    """forward encodes at most CHUNK_PAIRS (site, atom) pairs at a time (one site at least):
    rows are independent, so chunks of one or two sites give the vectors of one chunk."""
    import dimfeat.encoder as encoder_module

    with torch.inference_mode():
        whole = encoder(batch)
        for pairs in (1, 2 * batch.neighbour_species.shape[1]):
            monkeypatch.setattr(encoder_module, "CHUNK_PAIRS", pairs)
            torch.testing.assert_close(encoder(batch), whole, rtol=1e-5, atol=1e-6)


def test_inference_mish_matches_torch_mish_and_training_keeps_torch_mish():
    from dimfeat.encoder import Mish

    x = torch.cat([torch.linspace(-120.0, 120.0, 200_001), torch.tensor([0.0, -0.0, 1e30, -1e30])])
    exact = torch.nn.functional.mish(x.double())
    with torch.inference_mode():
        fast = Mish()(x)
    # within a few float32 ulps of |x| (the form cancels where Mish is nearly 0); exact for
    # large x, where e^x overflows
    assert ((fast.double() - exact).abs() <= 4e-7 * x.double().abs().clamp_min(1.0)).all()
    assert fast[-2] == 1e30 and fast[-1] == 0.0
    assert torch.isfinite(fast).all()
    # under autograd (training) it is torch's own Mish, bit for bit, with its gradient
    leaf = x[::1000].clone().requires_grad_()
    out = Mish()(leaf)
    assert torch.equal(out, torch.nn.functional.mish(leaf))
    out.sum().backward()
    assert torch.isfinite(leaf.grad).all()
    # and the input of the inference path is left as it was
    before = x.clone()
    with torch.no_grad():
        Mish()(x)
    assert torch.equal(x, before)


def test_inference_and_autograd_paths_give_the_same_vectors(encoder, batch):
    with torch.inference_mode():
        fast = encoder(batch)
    mu_local, _ = encoder.encode_local(
        batch.site_species, batch.neighbour_species, batch.distances, batch.mask
    )
    exact, _ = encoder.encode_global(mu_local, batch.crystal_index, batch.n_crystals)
    assert mu_local.requires_grad  # the torch-Mish path ran
    torch.testing.assert_close(fast, exact.detach(), rtol=1e-5, atol=1e-6)


def test_gaussian_basis_raises_underflowing_exponents_to_the_floor():
    """Exponents below UNDERFLOW_EXPONENT (where float32 exp slows down) are raised to it; the
    basis values above it are the formula's."""
    from dimfeat.encoder import UNDERFLOW_EXPONENT, GaussianBasis

    basis = GaussianBasis(32, 8.0)
    distances = torch.tensor([0.0, 2.5, 7.9, 40.0, 1000.0])
    values = basis(distances)
    exact = torch.exp(-0.5 * ((distances.unsqueeze(-1) - basis.centres) / basis.width) ** 2)
    floor = float(np.exp(UNDERFLOW_EXPONENT))
    assert torch.allclose(values.clamp_min(floor), exact.clamp_min(floor), rtol=1e-6, atol=0)
    assert float(values.min()) == pytest.approx(floor, rel=1e-6)  # far atoms: the floor, not 0
    assert torch.equal(values[-1], torch.full((32,), values.min()))
