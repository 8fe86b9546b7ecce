"""The encoder computes each distinct bond once (``SiteNetEncoder._encode_local_distinct_bonds``).

A bond's logit and value depend on (site species, neighbour species, distance) only, so on the
CPU the encoder evaluates the bond MLPs once per distinct triple and the distance embedding
once per distinct distance, in inference and under autograd. These tests hold it to the
pair-by-pair path (``DISTINCT_BONDS_FRACTION = 0``) on real crystals, outputs and gradients,
and count the rows it evaluates against an independent count.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dimfeat import encoder as encoder_module
from dimfeat.encoder import EncoderConfig, SiteNetEncoder
from dimfeat.inputs import build_inputs, collate, equivalent_sites


def _local(encoder: SiteNetEncoder, batch, *, distinct: bool, grad: bool = False):
    """encode_local on the whole batch, on the distinct-bond path or the pair-by-pair path
    (``DISTINCT_BONDS_FRACTION = 0`` switches the former off)."""
    args = (batch.site_species, batch.neighbour_species, batch.distances, batch.mask)
    with pytest.MonkeyPatch.context() as patch, torch.set_grad_enabled(grad):
        if not distinct:
            patch.setattr(encoder_module, "DISTINCT_BONDS_FRACTION", 0.0)
        mu, logvar = encoder.encode_local(*args)
    return mu, logvar


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def mixed_batch(sample_structures):
    """48 sample crystals (padded to different widths) and a 64-atom cell with no symmetry,
    sites merged as ``transform`` merges them."""
    structures = list(sample_structures[:48])
    big = (structures[0] * (4, 4, 4)).perturb(0.05, seed=1)
    crystals = [build_inputs(s) for s in [*structures, big]]
    assert crystals[-1].n_atoms > 50
    return collate(crystals, [equivalent_sites(c) for c in crystals])


def test_distinct_bonds_give_the_pair_by_pair_environments(featurizer, mixed_batch):
    encoder = featurizer.get_runtime().encoder.structure
    fast = _local(encoder, mixed_batch, distinct=True)
    exact = _local(encoder, mixed_batch, distinct=False)
    for a, b in zip(fast, exact, strict=True):
        assert a.shape == b.shape
        assert _relative(a, b) <= 1e-5  # only the summation order differs (measured 6e-7)
    with torch.inference_mode():
        vectors = encoder(mixed_batch)
    exact_vectors = encoder.encode_global(
        exact[0], mixed_batch.crystal_index, mixed_batch.n_crystals, mixed_batch.site_weight
    )[0].detach()
    assert _relative(vectors, exact_vectors) <= 1e-5


def test_each_distinct_bond_is_evaluated_once(featurizer, mixed_batch):
    encoder = featurizer.get_runtime().encoder.structure
    rows_seen: list[int] = []
    hook = encoder.values[-1].register_forward_hook(
        lambda module, inputs, output: rows_seen.append(output.shape[0])
    )
    try:
        _local(encoder, mixed_batch, distinct=True)
    finally:
        hook.remove()
    # an independent count: the distinct (site species, neighbour species, float32 distance)
    mask = mixed_batch.mask.numpy()
    rows, cols = np.nonzero(mask)
    triples = set(
        zip(
            mixed_batch.site_species.numpy()[rows].tolist(),
            mixed_batch.neighbour_species.numpy()[rows, cols].tolist(),
            mixed_batch.distances.numpy()[rows, cols].tolist(),
            strict=True,
        )
    )
    assert rows_seen == [len(triples)]
    assert len(triples) < 0.8 * mask.sum()  # the crystals do repeat bonds


def _output_shapes(module: torch.nn.Module) -> tuple[list[tuple], object]:
    """Shapes of ``module``'s outputs, recorded until the returned hook is removed."""
    shapes: list[tuple] = []
    hook = module.register_forward_hook(lambda m, i, output: shapes.append(tuple(output.shape)))
    return shapes, hook


def test_other_widths_of_the_bond_mlps(mixed_batch):
    """The joint first layer splits by each MLP's own width, whatever the configuration."""
    torch.manual_seed(3)
    config = EncoderConfig(attention_hidden=(24, 16), value_hidden=(40, 48), local_dim=8)
    encoder = SiteNetEncoder(config).eval()
    shapes, hook = _output_shapes(encoder.values[-1])
    try:
        fast = _local(encoder, mixed_batch, distinct=True)
    finally:
        hook.remove()
    assert len(shapes) == 1 and len(shapes[0]) == 2  # (distinct bonds, 48): the distinct path
    exact = _local(encoder, mixed_batch, distinct=False)
    for a, b in zip(fast, exact, strict=True):
        assert _relative(a, b) <= 1e-5


def test_training_gets_the_gradients_of_the_pair_by_pair_path(sample_structures):
    """Under autograd (training) the distinct-bond path runs too, and every parameter gets the
    gradient of the pair path: a distinct bond's gradient sums those of the pairs it stands
    for. (On a cell of ~900 atoms both float32 paths are ~0.2 % from a float64 reference, the
    rounding of sums over 800,000 pairs that nearly cancel, so the sample crystals are used.)"""
    crystals = [build_inputs(s) for s in sample_structures[:48]]
    batch = collate(crystals)  # every site, as training batches them
    torch.manual_seed(0)
    encoder = SiteNetEncoder().train()
    grads = {}
    for distinct in (True, False):
        encoder.zero_grad()
        shapes, hook = _output_shapes(encoder.values[-1])
        try:
            mu, logvar = _local(encoder, batch, distinct=distinct, grad=True)
        finally:
            hook.remove()
        (mu.square().sum() + logvar.sum()).backward()
        assert len(shapes[0]) == (2 if distinct else 3)  # (bonds, 64) or (sites, atoms, 64)
        grads[distinct] = {
            n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None
        }
    assert grads[True].keys() == grads[False].keys()
    assert "distance_embedding.0.weight" in grads[True]
    largest = max(float(g.abs().max()) for g in grads[False].values())
    for name, exact in grads[False].items():
        if float(exact.abs().max()) > 1e-6 * largest:
            assert _relative(grads[True][name], exact) <= 1e-4, name
        else:  # a gradient that is zero in exact arithmetic (the bias before a softmax)
            assert float(grads[True][name].abs().max()) <= 1e-6 * largest, name


def test_a_cell_whose_bonds_do_not_repeat_is_encoded_pair_by_pair(featurizer, nacl):
    """A perturbed 216-atom cell (no two environments alike, no repeated distance) has more
    than DISTINCT_BONDS_FRACTION distinct bonds: the pair path runs (its activations are
    pair-shaped), with the same environments."""
    from dimfeat.encoder import DISTINCT_BONDS_FRACTION

    cell = build_inputs((nacl * (3, 3, 3)).perturb(0.05, seed=0))
    assert cell.n_sites == cell.n_atoms > 50
    # 16 sites of it, as forward's chunks take them (a site and its partner rarely share one)
    cell = dataclasses.replace(cell, distances=cell.distances[:16])
    batch = collate([cell])
    encoder = featurizer.get_runtime().encoder.structure
    shapes: list[tuple] = []
    hook = encoder.values[-1].register_forward_hook(
        lambda module, inputs, output: shapes.append(tuple(output.shape))
    )
    try:
        fast = _local(encoder, batch, distinct=True)
    finally:
        hook.remove()
    pairs = int(batch.mask.sum())
    distinct = len(
        set(
            zip(
                np.repeat(batch.site_species.numpy(), cell.n_atoms).tolist(),
                batch.neighbour_species.numpy().ravel().tolist(),
                batch.distances.numpy().ravel().tolist(),
                strict=True,
            )
        )
    )
    assert distinct > DISTINCT_BONDS_FRACTION * pairs
    assert shapes == [(cell.n_sites, cell.n_atoms, 64)]  # one (sites, atoms) pass
    exact = _local(encoder, batch, distinct=False)
    assert _relative(fast[0], exact[0]) <= 1e-5  # (the inference Mish differs by ulps)


def test_the_distinct_path_keeps_the_dtype_of_its_activations(featurizer, mixed_batch):
    """Its buffers follow the activations, not torch's default dtype: a float64 default (set by
    a user's other code) and CPU autocast both leave it on the distinct path, with the vectors
    of the float32 pair path."""
    encoder = featurizer.get_runtime().encoder.structure
    exact = _local(encoder, mixed_batch, distinct=False)[0]
    rows_seen, hook = _output_shapes(encoder.values[-1])
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        fast = _local(encoder, mixed_batch, distinct=True)[0]
    finally:
        torch.set_default_dtype(default)
        hook.remove()
    assert len(rows_seen) == 1 and rows_seen[0][0] < mixed_batch.mask.sum()  # distinct path
    assert fast.dtype == torch.float32 and _relative(fast, exact) <= 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _local(encoder, mixed_batch, distinct=True)[0]
    assert torch.isfinite(low).all()
    assert _relative(low.float(), exact) <= 0.1  # bfloat16 keeps about 3 significant digits
