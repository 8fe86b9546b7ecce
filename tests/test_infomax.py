"""The Deep InfoMax objective: gradient flow, false-sample switches, sampling, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from dimfeat.elements import MAX_Z
from dimfeat.encoder import SiteNetEncoder
from dimfeat.infomax import (
    FALSE_SAMPLE_KINDS,
    DeepInfoMaxLoss,
    _composition_kl,
    _kl,
    _Sampler,
)
from dimfeat.inputs import build_inputs, collate

LOCAL_MODULES = (
    "site_embedding",
    "distance_embedding",
    "attention",
    "values",
    "local_mu",
    "local_logvar",
)
N_Z = MAX_Z + 1  # classes of the composition read-out: atomic numbers 0 (padding) to MAX_Z
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


def test_global_trains_local_lets_the_global_loss_reach_the_local_encoder(batch):
    # same forward pass as the paper's detach(); only where the gradient goes differs
    encoder, criterion = _model()
    _, through = _model(global_trains_local=True)
    through.load_state_dict(criterion.state_dict())
    detached = criterion(encoder, batch, _gen())
    terms = through(encoder, batch, _gen())
    assert float(terms.loss.detach()) == pytest.approx(float(detached.loss.detach()), rel=1e-6)
    terms.global_dim.backward()
    local = _grads(encoder, LOCAL_MODULES[:-1])  # local_logvar: the global loss reads mu only
    assert all(g > 0 for g in local.values()), local
    assert all(g > 0 for g in _grads(encoder, GLOBAL_MODULES[:3]).values())
    # the synthetic false crystals' environments carry gradient too (and do not without it)
    for trains, expected in ((True, True), (False, False)):
        _, loss = _model(global_trains_local=trains, false_samples=("other", "permutation"))
        tracked = []
        original = encoder.encode_local

        def recording(*args, original=original, tracked=tracked, **kwargs):
            mu, logvar = original(*args, **kwargs)
            tracked.append(mu.requires_grad)
            return mu, logvar

        encoder.encode_local = recording
        try:
            loss(encoder, batch, _gen())
        finally:
            del encoder.encode_local
        assert tracked == [True, expected]  # the true environments, then the permuted crystals


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
    assert set(parts) == {
        "loss",
        "local_dim",
        "global_dim",
        "local_kl",
        "global_kl",
        "composition",
    }
    assert parts["composition"] == 0.0  # composition_weight=0: the paper's objective
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
        ("other", "substitution"),
        FALSE_SAMPLE_KINDS,
        (*FALSE_SAMPLE_KINDS, "substitution"),
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
    with pytest.raises(ValueError, match="one element"):
        DeepInfoMaxLoss(encoder.config, false_samples=("permutation",))
    with pytest.raises(ValueError, match="local_constituent"):
        DeepInfoMaxLoss(encoder.config, local_constituent="pair")


def test_local_false_samples_choose_the_local_kinds_only(batch, monkeypatch):
    """The local loss draws only ``local_false_samples``; the global loss all ``false_samples``."""
    local_kinds, global_kinds = [], []
    environments, synthetic = DeepInfoMaxLoss._false_environments, DeepInfoMaxLoss._synthetic

    def spy_local(self, kind, b, sampler):
        local_kinds.append(kind)
        return environments(self, kind, b, sampler)

    def spy_global(self, kind, b, sampler):
        global_kinds.append(kind)
        n_local = len(local_kinds)
        out = synthetic(self, kind, b, sampler)
        del local_kinds[n_local:]  # _synthetic builds most kinds through _false_environments
        return out

    monkeypatch.setattr(DeepInfoMaxLoss, "_false_environments", spy_local)
    monkeypatch.setattr(DeepInfoMaxLoss, "_synthetic", spy_global)
    paper = ("other", "polymorph", "composition")
    encoder, criterion = _model(local_false_samples=paper)
    assert criterion.false_samples == FALSE_SAMPLE_KINDS
    assert criterion.local_false_samples == paper
    criterion(encoder, batch, _gen())
    assert local_kinds == list(paper)
    assert global_kinds == [k for k in FALSE_SAMPLE_KINDS if k != "other"]

    _, default = _model()
    assert default.local_false_samples == default.false_samples
    with pytest.raises(ValueError, match="local_false_samples must be a non-empty subset"):
        _model(local_false_samples=("strains",))
    with pytest.raises(ValueError, match="one element"):
        _model(local_false_samples=("permutation",))


def test_linear_critic_makes_the_scores_linear_in_the_vectors(batch):
    encoder, criterion = _model(critic="linear")
    for head in (criterion.heads.local_z, criterion.heads.global_z):
        assert len(head) == 1 and isinstance(head[0], torch.nn.Linear)
    z = torch.randn(5, encoder.config.global_dim)
    a, b = criterion.heads.global_z(z[:1]), criterion.heads.global_z(z[1:2])
    mix = criterion.heads.global_z(0.25 * z[:1] + 0.75 * z[1:2])
    torch.testing.assert_close(mix, 0.25 * a + 0.75 * b)  # affine in z
    terms = criterion(encoder, batch, _gen())
    assert all(math.isfinite(v) for v in terms.as_floats().values())
    terms.loss.backward()
    assert encoder.global_mu.weight.grad is not None
    _, paper = _model()
    assert len(paper.heads.global_z) > 1  # the paper's MLP by default
    with pytest.raises(ValueError, match="critic must be one of"):
        _model(critic="bilinear")


def test_synthetic_weight_is_a_weighted_mean_over_the_kinds(batch):
    """The weight scales each synthetic kind against ``other``: among synthetic kinds alone it
    cancels out (a weighted mean, not a sum), next to ``other`` it moves the loss, and it must
    be positive."""

    def js(weight, kinds):
        encoder, criterion = _model(false_samples=kinds, synthetic_weight=weight)
        terms = criterion(encoder, batch, _gen())
        return float(terms.local_dim.detach()), float(terms.global_dim.detach())

    synthetic = ("polymorph", "composition", "permutation")
    for weight in (0.25, 3.0):
        assert js(weight, synthetic) == pytest.approx(js(1.0, synthetic), rel=1e-6)
    # other, polymorph and strain apply to every row (the same draws for every weight), so the
    # false term is (T_other + w (T_polymorph + T_strain)) / (1 + 2 w) in every row: the loss at
    # w = 1 lies a third of the way from the other-only end (w -> 0) to the synthetic end
    kinds = ("other", "polymorph", "strain")
    low, one, high = js(1e-9, kinds), js(1.0, kinds), js(1e9, kinds)
    for k in range(2):  # local and global
        assert one[k] == pytest.approx((low[k] + 2 * high[k]) / 3, rel=1e-5)
        assert abs(low[k] - high[k]) > 1e-3  # the weight does move the loss
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="synthetic_weight must be > 0"):
            _model(synthetic_weight=bad)


def test_bond_constituents(batch):
    encoder, criterion = _model(local_constituent="bond")
    n_distance = encoder.config.n_gaussians
    assert criterion.heads.local_c[0].in_features == 2 * 9 + n_distance
    assert math.isfinite(float(criterion(encoder, batch, _gen()).loss.detach()))


def test_a_batch_of_one_crystal_raises(cscl):
    encoder, criterion = _model()
    with pytest.raises(ValueError, match="at least 2 crystals"):
        criterion(encoder, collate([build_inputs(cscl)]), _gen())


def test_permutation_skips_single_element_crystals(elements_batch, srtio3, zno):
    # Shuffling the species of an element changes nothing: such a crystal gets no permutation
    # false sample (every row is marked unchanged)...
    encoder, with_perm = _model(false_samples=("other", "permutation"))
    sampler = _Sampler(elements_batch, _gen())
    rows, site, neigh, _ = with_perm._false_environments("permutation", elements_batch, sampler)
    assert with_perm._changed("permutation", elements_batch, rows, site, neigh).sum() == 0
    # ...while compounds do get one, in both the local and the global loss
    compounds = collate([build_inputs(srtio3), build_inputs(zno)])
    sampler = _Sampler(compounds, _gen())
    rows, site, neigh, _ = with_perm._false_environments("permutation", compounds, sampler)
    assert with_perm._changed("permutation", compounds, rows, site, neigh).sum() > 0
    _, without = _model(false_samples=("other",))
    without.load_state_dict(with_perm.state_dict())
    a = with_perm(encoder, compounds, _gen()).as_floats()
    b = without(encoder, compounds, _gen()).as_floats()
    assert a["local_dim"] != b["local_dim"]
    assert a["global_dim"] != b["global_dim"]


def test_same_composition_false_samples_keep_the_composition(batch):
    # permutation and strain must not be separable by composition: same species multiset per row
    _, criterion = _model()
    for kind in ("permutation", "strain"):
        rows, _, neigh, d = criterion._false_environments(kind, batch, _Sampler(batch, _gen()))
        assert torch.equal(rows, torch.arange(len(batch.site_species)))
        true_counts = torch.sort(batch.neighbour_species, dim=1).values
        assert torch.equal(torch.sort(neigh, dim=1).values, true_counts)
        if kind == "strain":
            ratio = (d / batch.distances)[batch.mask & (batch.distances > 0)]
            factor = ratio.max() if ratio.max() > 1 else ratio.min()
            assert 1.05 <= max(factor, 1 / factor) <= 1.25


def test_substitution_replaces_each_element_by_one_similar_element_on_the_own_geometry(batch):
    from dimfeat.elements import similar_elements

    _, criterion = _model(false_samples=("other", "substitution"))
    table = torch.from_numpy(similar_elements(3))
    for seed in range(5):
        sampler = _Sampler(batch, _gen(seed))
        rows, site, neigh, d = criterion._false_environments("substitution", batch, sampler)
        assert torch.equal(rows, torch.arange(len(batch.site_species)))
        assert torch.equal(d, batch.distances)  # the crystal's own geometry
        assert torch.equal(neigh == 0, ~batch.mask)  # padding stays padding
        assert (site != batch.site_species).all()  # every site changed
        for c in range(batch.n_crystals):
            own = batch.crystal_index == c
            mask = batch.mask[own]
            true = torch.cat([batch.site_species[own], batch.neighbour_species[own][mask]])
            false = torch.cat([site[own], neigh[own][mask]])
            # one substitute per element for the whole crystal, drawn from its similar elements
            mapping = {}
            for t, f in zip(true.tolist(), false.tolist(), strict=False):
                assert mapping.setdefault(t, f) == f
                assert f in table[t].tolist()


def test_similar_elements_are_chemical_neighbours():
    from pymatgen.core import Element

    from dimfeat.elements import similar_elements

    table = similar_elements(3)
    assert table.shape == (MAX_Z + 1, 3) and (table[0] == 0).all()
    z = np.arange(1, MAX_Z + 1)
    assert (table[1:] != z[:, None]).all() and ((table[1:] >= 1) & (table[1:] <= MAX_Z)).all()
    symbols = {
        s: [Element.from_Z(int(x)).symbol for x in table[Element(s).Z]] for s in ("Na", "Fe")
    }
    assert "K" in symbols["Na"] and "Li" in symbols["Na"]
    assert {"Co", "Mn"} <= set(symbols["Fe"])
    with pytest.raises(ValueError, match="k must be"):
        similar_elements(0)


@pytest.mark.parametrize("strain_range", [(1.05, 1.25), (1.01, 1.05), (1.1, 1.1)])
def test_strain_factors_stay_in_the_range(batch, strain_range):
    _, criterion = _model(strain_range=strain_range)
    low, high = strain_range
    factors = torch.cat(
        [_Sampler(batch, _gen(seed)).strain(criterion.strain_range) for seed in range(20)]
    )
    size = torch.where(factors >= 1, factors, 1 / factors)
    assert (size >= low * (1 - 1e-6)).all() and (size <= high * (1 + 1e-6)).all()
    assert (factors > 1).any() and (factors < 1).any()  # both directions
    *_, d = criterion._false_environments("strain", batch, _Sampler(batch, _gen()))
    ratio = (d / batch.distances)[batch.mask & (batch.distances > 0)]
    assert ((ratio >= 1 / high * (1 - 1e-6)) & (ratio <= high * (1 + 1e-6))).all()


def test_polymorph_donors_prefer_crystals_of_the_same_size(batch):
    sampler = _Sampler(batch, _gen(3))
    n = batch.n_sites
    for _ in range(20):
        donors = sampler.donors(same_size=True)
        assert (donors != torch.arange(batch.n_crystals)).all()
        for c, d in enumerate(donors.tolist()):
            if ((n == n[c]).sum() > 1).item():
                assert n[d] == n[c]


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


@pytest.mark.parametrize("constituent", ["neighbour", "bond"])
def test_factorised_pair_scores_match_the_plain_classifier(batch, constituent):
    # _pair_scores never builds u_c(c) (S, M, 128); it must equal u_z(z) . u_c([f_i, f_j, g(d)])
    encoder, criterion = _model(local_constituent=constituent)
    b = batch
    uz = torch.randn(len(b.site_species), 128, generator=_gen(5))
    last = criterion.heads.local_c[-1]
    expanded = encoder.expand_distances(b.distances)
    fast = criterion._pair_scores(
        encoder,
        (uz @ last.weight, uz @ last.bias),
        b.site_species,
        b.neighbour_species,
        criterion._distance_part(expanded),
    )
    parts = [encoder.site_features(b.neighbour_species), expanded]
    if constituent == "bond":
        f_i = encoder.site_features(b.site_species).unsqueeze(1).expand_as(parts[0])
        parts.insert(0, f_i)
    plain = torch.einsum("sd,smd->sm", uz, criterion.heads.local_c(torch.cat(parts, dim=-1)))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_sampled_pairs_estimate_the_exact_local_term(batch):
    # local_pairs=K replaces the weighted sum over all pairs by a mean over K weighted draws:
    # averaged over many draws it must agree with the exact term (and a single draw must not)
    _, exact = _model(local_pairs=None)
    encoder, sampled = _model(local_pairs=4)
    b = batch
    uz = torch.randn(len(b.site_species), 128, generator=_gen(5))
    last = exact.heads.local_c[-1]
    q = (uz @ last.weight, uz @ last.bias)
    own = exact._distance_part(encoder.expand_distances(b.distances))

    def part(idx):
        return own if idx is None else own.gather(1, idx.unsqueeze(-1).expand(-1, -1, 64))

    args = (b.site_species, b.neighbour_species, b.distances, b.mask, part)
    with torch.no_grad():
        reference = exact._pair_term(encoder, q, _Sampler(b, _gen()), *args, true=True)
        sampler = _Sampler(b, _gen(9))
        draws = torch.stack(
            [sampled._pair_term(encoder, q, sampler, *args, true=True) for _ in range(600)]
        )
    assert not torch.allclose(draws[0], reference, rtol=1e-3)
    torch.testing.assert_close(draws.mean(0), reference, rtol=0.05, atol=0.02)


# -- composition term ---------------------------------------------------------------------------
def test_composition_term_is_zero_for_the_exact_fractions_and_positive_otherwise(batch):
    n = batch.n_crystals
    counts = torch.zeros(n, N_Z)
    counts.index_put_(
        (batch.crystal_index, batch.site_species),
        torch.ones(len(batch.site_species)),
        accumulate=True,
    )
    p = counts / counts.sum(1, keepdim=True)
    exact = torch.where(p > 0, torch.log(p), torch.tensor(-1e4))  # softmax(exact) = p
    assert float(_composition_kl(exact, batch.site_species, batch.crystal_index)) == pytest.approx(
        0.0, abs=1e-6
    )
    uniform = torch.zeros(n, N_Z)
    value = float(_composition_kl(uniform, batch.site_species, batch.crystal_index))
    entropy = -(torch.xlogy(p, p)).sum(1)
    assert value == pytest.approx(float((math.log(N_Z) - entropy).mean()), rel=1e-6)
    assert value > 0


def test_composition_term_reads_the_primitive_cell_not_the_supercell(classic):
    # the target is the composition of the unique sites: a supercell gives the same fractions
    s = classic["SrTiO3"]
    big = s.copy()
    big.make_supercell([2, 1, 1])
    a, b = (
        collate([build_inputs(s), build_inputs(s)]),
        collate([build_inputs(big), build_inputs(s)]),
    )
    logits = torch.randn(2, N_Z, generator=_gen(3))
    assert float(_composition_kl(logits, a.site_species, a.crystal_index)) == pytest.approx(
        float(_composition_kl(logits, b.site_species, b.crystal_index)), rel=1e-6
    )


def test_composition_term_is_weighted_into_the_loss_and_trains_the_global_encoder(batch):
    encoder, criterion = _model(composition_weight=0.7)
    terms = criterion(encoder, batch, _gen())
    parts = terms.as_floats()
    expected = (
        parts["local_dim"]
        + parts["global_dim"]
        + criterion.beta * (parts["local_kl"] + parts["global_kl"])
    )
    assert parts["composition"] > 0
    assert parts["loss"] == pytest.approx(expected + 0.7 * parts["composition"], rel=1e-5)
    terms.composition.backward()
    assert all(g > 0 for g in _grads(encoder, ("postpool", "global_mu")).values())
    assert all(g == 0.0 for g in _grads(encoder, LOCAL_MODULES).values())  # reads detached mu


def test_composition_weight_zero_adds_no_parameters_and_negative_is_refused():
    encoder, plain = _model()
    _, with_term = _model(composition_weight=1.0)
    assert not hasattr(plain.heads, "composition")
    n_plain = sum(p.numel() for p in plain.parameters())
    n_term = sum(p.numel() for p in with_term.parameters())
    assert n_term - n_plain == (encoder.config.global_dim + 1) * N_Z
    with pytest.raises(ValueError, match="composition_weight"):
        DeepInfoMaxLoss(encoder.config, composition_weight=-1.0)
