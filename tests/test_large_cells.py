"""Large primitive cells (more atoms than ``max_atoms``): the chunked encoder path and the
benchmark that measures their cost (``benchmarks/perf/large_cell.py``)."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

import dimfeat.encoder as encoder_module
from benchmarks.perf.large_cell import fit_cost_model, large_cell, per_pair, repeats_for
from dimfeat.inputs import build_inputs, collate, equivalent_sites


@pytest.fixture(scope="module")
def cell_1000():
    """Inputs of the benchmark's 1,000-atom cell (its own supercell: 10^6 pairs)."""
    return build_inputs(large_cell(1000))


def test_the_benchmark_cell_keeps_all_its_atoms_and_every_site_its_own_environment():
    assert repeats_for(1000) == (5, 10, 10)
    a, b, c = repeats_for(6000)
    assert a * b * c * 2 == 6000 and a <= b <= c
    with pytest.raises(ValueError, match="even"):
        repeats_for(999)
    crystal = build_inputs(large_cell(500))
    assert (crystal.n_sites, crystal.n_atoms) == (500, 500)  # no smaller primitive cell
    representatives, _ = equivalent_sites(crystal)
    assert len(representatives) == 500  # the worst case: nothing to merge


def test_a_large_cell_gives_the_same_vector_whatever_the_chunking(featurizer, cell_1000):
    """The 10^6 pairs of a 1,000-atom cell go through the encoder CHUNK_PAIRS at a time (16
    sites); one site at a time, or 64 (4x the default), gives the same vector within 1e-5."""
    encoder = featurizer.get_runtime().encoder.structure
    batch = collate([cell_1000], [equivalent_sites(cell_1000)])
    with torch.inference_mode():
        default = encoder(batch)
        out = {}
        for pairs in (1, 4 * encoder_module.CHUNK_PAIRS):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(encoder_module, "CHUNK_PAIRS", pairs)
                out[pairs] = encoder(batch)
    for vector in out.values():
        scale = default.abs().max()
        assert float((vector - default).abs().max() / scale) <= 1e-5
    assert torch.isfinite(default).all()


def test_no_chunk_output_outlives_its_chunk(featurizer, sample_structures, monkeypatch):
    """forward copies each chunk's rows into one preallocated tensor and frees the chunk before
    encoding the next: a list of small chunk outputs kept alive between the pair-sized
    activations fragmented the heap (a 2,000-atom cell's peak RSS varied by 0.5 GB)."""
    encoder = featurizer.get_runtime().encoder.structure
    from dimfeat.inputs import build_many

    inputs, _ = build_many(sample_structures[:8])
    batch = collate(inputs)
    monkeypatch.setattr(encoder_module, "CHUNK_PAIRS", 1)  # one site per chunk
    real = encoder_module.SiteNetEncoder.encode_local
    previous: list[weakref.ref] = []
    alive_at_next_call = []

    def encode_local(self, *args, **kwargs):
        alive_at_next_call.extend(ref() is not None for ref in previous)
        previous.clear()
        mu, logvar = real(self, *args, **kwargs)
        previous.append(weakref.ref(mu))
        return mu, logvar

    monkeypatch.setattr(encoder_module.SiteNetEncoder, "encode_local", encode_local)
    with torch.inference_mode():
        chunked = encoder(batch)
    assert len(alive_at_next_call) == batch.site_species.shape[0] - 1
    assert not any(alive_at_next_call)
    monkeypatch.setattr(encoder_module.SiteNetEncoder, "encode_local", real)
    monkeypatch.setattr(encoder_module, "CHUNK_PAIRS", 10**9)  # one chunk
    with torch.inference_mode():
        torch.testing.assert_close(chunked, encoder(batch), rtol=1e-5, atol=1e-6)


def test_chunked_forward_still_trains(sample_structures):
    """The preallocated rows keep the autograd graph: gradients reach the local encoder."""
    from dimfeat.inputs import build_many

    torch.manual_seed(0)
    encoder = encoder_module.SiteNetEncoder()
    inputs, _ = build_many(sample_structures[:4])
    batch = collate(inputs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoder_module, "CHUNK_PAIRS", 1)
        encoder(batch).sum().backward()
    chunked = encoder.values[0].weight.grad.clone()
    encoder.zero_grad()
    encoder(batch).sum().backward()
    whole = encoder.values[0].weight.grad
    assert float((chunked - whole).abs().max() / whole.abs().max()) <= 1e-4
    assert whole.abs().sum() > 0


def test_the_cost_model_fit_recovers_a_quadratic_cost():
    """Rows made from a known model ``a + b N^2`` are fitted back to it; rows under 2,000
    atoms are left out while two atom counts or more remain."""
    a, b, base, c = 1.5, 1.7e-6, 410.0, 25.0  # seconds, seconds per pair, MiB, bytes per pair
    rows = []
    for atoms in (500, 1000, 2000, 4000, 10000):
        pairs = atoms * atoms
        rows.append(
            {
                "atoms": atoms,
                "pairs": pairs,
                "cpu_seconds": a + b * pairs + (5.0 if atoms < 2000 else 0.0),  # off-model
                "peak_rss_mib": base + c * pairs / 2**20,
                "rss_before_mib": base,
            }
        )
    model = fit_cost_model(rows)
    assert model["atoms"] == [2000, 4000, 10000]
    assert model["cpu_seconds_constant"] == pytest.approx(a, abs=0.01)
    assert model["cpu_seconds_per_pair_us"] == pytest.approx(b * 1e6, rel=1e-3)
    assert model["rss_base_mib"] == pytest.approx(base, abs=0.1)
    assert model["rss_bytes_per_pair"] == pytest.approx(c, rel=1e-3)
    micro, added = per_pair(rows[-1])
    assert micro == pytest.approx(1e6 * rows[-1]["cpu_seconds"] / 1e8)
    assert added == pytest.approx(c)
    assert fit_cost_model(rows[:2])["atoms"] == [500, 1000]  # too few large rows: all of them
    with pytest.raises(ValueError, match="two atom counts"):
        fit_cost_model(rows[:1])
    with pytest.raises(ValueError, match="two atom counts"):
        fit_cost_model([rows[2], dict(rows[2])])  # repeats of one size fit nothing


def test_collated_inputs_of_one_large_cell_hold_21_bytes_per_pair(cell_1000):
    """The cost model's memory term: a collated cell holds int64 neighbour species and sites,
    float32 distances and a bool mask for every (site, atom) pair; the cell's own inputs
    4 bytes more (float32 distances)."""
    batch = collate([cell_1000], [equivalent_sites(cell_1000)])
    pair_tensors = (batch.neighbour_species, batch.neighbour_site, batch.distances, batch.mask)
    held = sum(t.element_size() * t.numel() for t in pair_tensors)
    assert held == 21 * cell_1000.n_sites * cell_1000.n_atoms
    assert cell_1000.distances.nbytes == 4 * cell_1000.n_sites * cell_1000.n_atoms
    assert np.isfinite(cell_1000.distances).all()
