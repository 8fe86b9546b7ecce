"""The Deep InfoMax objective: gradient flow, false-sample switches, sampling, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from dimfeat.encoder import SiteNetEncoder
from dimfeat.infomax import FALSE_SAMPLE_KINDS, DeepInfoMaxLoss, _kl, _Sampler
from dimfeat.inputs import build_inputs, collate

LOCAL_MODULES = (
    "site_embedding",
    "distance_embedding",
    "attention",
    "values",
    "local_mu",
    "local_logvar",
)
GLOBAL_MODULES = ("prepool", "postpool", "global_mu", "global_logvar")


def _model(seed: int = 0, **loss_kwargs) -> tuple[SiteNetEncoder, DeepInfoMaxLoss]:
    torch.manual_seed(seed)
    encoder = SiteNetEncoder()
    return encoder, DeepInfoMaxLoss(encoder.config, **loss_kwargs)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch(classic):
    return collate([build_inputs(s) for s in classic.values()])


@pytest.fixture(scope="module")
def elements_batch():
    """Two single-element crystals: silicon (diamond) and copper (fcc)."""
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])
    return collate([build_inputs(si), build_inputs(cu)])


def _grads(module: torch.nn.Module, names) -> dict[str, float]:
    out = {}
    for name in names:
        for pname, p in getattr(module, name).named_parameters():
            out[f"{name}.{pname}"] = 0.0 if p.grad is None else float(p.grad.abs().sum())
    return out


def test_global_loss_sends_no_gradient_into_the_local_encoder(batch):
    encoder, criterion = _model()
    terms = criterion(encoder, batch, _gen())
    terms.global_dim.backward()
    local = _grads(encoder, LOCAL_MODULES)
    assert local and all(g == 0.0 for g in local.values()), local
    assert all(g > 0 for g in _grads(encoder, GLOBAL_MODULES[:3]).values())
    assert all(g > 0 for g in _grads(criterion.heads, ("global_z", "global_c")).values())


def test_local_loss_trains_the_local_encoder(batch):
    # the positive control of the test above
    encoder, criterion = _model()
    criterion(encoder, batch, _gen()).local_dim.backward()
    assert all(g > 0 for g in _grads(encoder, LOCAL_MODULES).values())
    assert all(g == 0.0 for g in _grads(encoder, GLOBAL_MODULES).values())


def test_loss_combines_its_terms(batch):
    encoder, criterion = _model(alpha=2.0, beta=0.5)
    terms = criterion(encoder, batch, _gen())
    parts = terms.as_floats()
    assert set(parts) == {"loss", "local_dim", "global_dim", "local_kl", "global_kl"}
    assert all(math.isfinite(v) for v in parts.values())
    expected = 2.0 * (parts["local_dim"] + parts["global_dim"]) + 0.5 * (
        parts["local_kl"] + parts["global_kl"]
    )
    assert parts["loss"] == pytest.approx(expected, rel=1e-5)
    assert parts["local_dim"] > 0 and parts["global_dim"] > 0  # sums of softplus terms


def test_same_generator_seed_gives_the_same_loss(batch):
    encoder, criterion = _model()
    a = criterion(encoder, batch, _gen(5)).as_floats()
    b = criterion(encoder, batch, _gen(5)).as_floats()
    c = criterion(encoder, batch, _gen(6)).as_floats()
    assert a == b
    assert a["local_dim"] != c["local_dim"]


def test_kl_term_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(4, 8)
    assert float(_kl(zeros, zeros)) == 0.0
    assert float(_kl(zeros + 0.3, zeros)) == pytest.approx(0.09)
    assert float(_kl(zeros, zeros + 1.0)) == pytest.approx(math.e - 2)


@pytest.mark.parametrize(
    "kinds",
    [
        ("other",),
        ("polymorph",),
        ("composition",),
        ("other", "permutation"),
        ("polymorph", "composition"),
        FALSE_SAMPLE_KINDS,
    ],
)
def test_each_false_sample_kind_can_be_switched(batch, kinds):
    encoder, criterion = _model(false_samples=kinds)
    assert criterion.false_samples == tuple(kinds)
    terms = criterion(encoder, batch, _gen())
    assert all(math.isfinite(v) for v in terms.as_floats().values())
    terms.loss.backward()
    assert encoder.site_embedding[0].weight.grad is not None


def test_false_sample_kinds_change_the_loss(batch):
    losses = {}
    for kinds in [("other",), ("polymorph",), ("composition",), FALSE_SAMPLE_KINDS]:
        encoder, criterion = _model(false_samples=kinds)
        losses[kinds] = criterion(encoder, batch, _gen()).as_floats()
    local = [v["local_dim"] for v in losses.values()]
    assert len(set(local)) == len(local)


def test_invalid_false_samples_and_constituents_raise():
    encoder = SiteNetEncoder()
    with pytest.raises(ValueError, match="subset"):
        DeepInfoMaxLoss(encoder.config, false_samples=("others",))
    with pytest.raises(ValueError, match="subset"):
        DeepInfoMaxLoss(encoder.config, false_samples=())
    with pytest.raises(ValueError, match="global loss only"):
        DeepInfoMaxLoss(encoder.config, false_samples=("permutation",))
    with pytest.raises(ValueError, match="local_constituent"):
        DeepInfoMaxLoss(encoder.config, local_constituent="pair")


def test_bond_constituents(batch):
    encoder, criterion = _model(local_constituent="bond")
    assert criterion.heads.local_c[0].in_features == 2 * 9 + 1
    assert math.isfinite(float(criterion(encoder, batch, _gen()).loss.detach()))


def test_a_batch_of_one_crystal_raises(cscl):
    encoder, criterion = _model()
    with pytest.raises(ValueError, match="at least 2 crystals"):
        criterion(encoder, collate([build_inputs(cscl)]), _gen())


def test_permutation_skips_single_element_crystals(elements_batch, srtio3, zno):
    # Shuffling the species of an element changes nothing: such a crystal gets no permutation
    # false sample, so adding the kind leaves the loss exactly as it was...
    encoder, with_perm = _model(false_samples=("other", "permutation"))
    _, without = _model(false_samples=("other",))
    without.load_state_dict(with_perm.state_dict())
    a = with_perm(encoder, elements_batch, _gen()).as_floats()
    b = without(encoder, elements_batch, _gen()).as_floats()
    assert a == b
    # ...while compounds do get one (the check above can fail)
    compounds = collate([build_inputs(srtio3), build_inputs(zno)])
    a = with_perm(encoder, compounds, _gen()).as_floats()
    b = without(encoder, compounds, _gen()).as_floats()
    assert a["local_dim"] == b["local_dim"]
    assert a["global_dim"] != b["global_dim"]


def test_other_crystal_draws_are_uniform_over_the_other_crystals(batch):
    sampler = _Sampler(batch, _gen(1))
    owner = batch.crystal_index
    n_rows = len(owner)
    counts = np.zeros((n_rows, n_rows))
    for _ in range(300):
        rows = sampler.other_rows(owner).numpy()
        counts[np.arange(n_rows), rows] += 1
    same = (owner[:, None] == owner[None, :]).numpy()
    assert counts[same].sum() == 0  # never a row of the same crystal
    expected = 300 / (n_rows - batch.n_sites.numpy()[owner.numpy()])
    # every row of every other crystal is drawn, at about the uniform rate
    for i in range(n_rows):
        hits = counts[i][~same[i]]
        assert hits.min() > expected[i] / 3
        assert hits.max() < 3 * expected[i]
    donors = torch.stack([sampler.donors() for _ in range(200)])
    assert (donors != torch.arange(batch.n_crystals)).all()
    assert len(torch.unique(donors[:, 0])) == batch.n_crystals - 1
