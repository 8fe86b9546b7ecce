"""The context channel's fast path (pair tables, one forward per composition per call) keeps
its vectors, and the throughput benchmark compares several weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.perf.throughput import compare_weights
from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.channels import load_weights
from dimfeat.encoder import EncoderConfig, composition_memo
from dimfeat.inputs import build_inputs, collate
from dimfeat.runtime import EncoderRuntime

ROOT = Path(__file__).resolve().parents[1]
TWO_CHANNEL = ROOT / "benchmarks" / "results" / "archive" / "two-channel-screen-1" / "weights"
CONTEXT = EncoderConfig(distance_input="none", global_dim=64)


@pytest.fixture(scope="module")
def two_channel_weights() -> Path:
    if not (TWO_CHANNEL / "model.safetensors").is_file():
        pytest.skip(f"{TWO_CHANNEL} is not in this checkout")
    return TWO_CHANNEL


def test_two_channel_vectors_match_the_site_path(two_channel_weights, sample_structures):
    """Context columns: the composition path with its pair tables computes what
    encode_local + encode_global compute over the supercell; structure columns: the structure
    encoder's own forward."""
    structures = list(sample_structures[:40])
    vectors = DeepInfoMaxFeaturizer(weights=str(two_channel_weights)).transform(structures)
    encoder, _ = load_weights(two_channel_weights)
    batch = collate([build_inputs(s) for s in structures])
    with torch.inference_mode():
        context = encoder.context
        mu, _ = context.encode_local(
            batch.site_species, batch.neighbour_species, batch.distances, batch.mask
        )
        site_path, _ = context.encode_global(
            mu, batch.crystal_index, batch.n_crystals, batch.site_weight
        )
        structure = encoder.structure(batch)
    width = site_path.shape[1]
    scale = np.abs(site_path.numpy()).max(axis=1, keepdims=True)
    assert np.abs(vectors[:, :width] - site_path.numpy()).max() / scale.min() < 1e-5
    np.testing.assert_allclose(vectors[:, width:], structure.numpy(), rtol=1e-5, atol=1e-6)


def test_context_vectors_are_the_same_bits_in_any_batching(sample_structures):
    """One batch or many (the memo then serves later batches), forwards or backwards."""
    runtime = EncoderRuntime.create(None, seed=5, encoder_config=CONTEXT)
    inputs, _ = runtime.build(list(sample_structures[:120]))
    whole = runtime.encode(inputs)
    many = runtime.encode(inputs, batch_size=7)
    backwards = runtime.encode(inputs[::-1], batch_size=13)[::-1]
    np.testing.assert_array_equal(whole, many)
    np.testing.assert_array_equal(whole, backwards)
    with torch.inference_mode():  # no memo: every batch computes its own tables
        alone = np.concatenate([runtime.encoder(collate(inputs[k : k + 9])) for k in (0, 9)])
    np.testing.assert_array_equal(whole[:18], alone)


def test_composition_memo_encodes_each_composition_once_per_call(sample_structures, nacl):
    runtime = EncoderRuntime.create(None, seed=5, encoder_config=CONTEXT)
    encoder = runtime.encoder
    inputs, _ = runtime.build([nacl, *sample_structures[:30], nacl.copy(), nacl * (2, 1, 1)])
    with torch.inference_mode(), composition_memo(encoder):
        memo = encoder._memo
        first = encoder(collate(inputs[:16]))
        tables = memo.tables
        second = encoder(collate(inputs[16:]))
        assert memo.tables is tables  # computed once
        distinct = {key for key in memo.vectors}
        with composition_memo(encoder):  # nested: the outer memo stays
            assert encoder._memo is memo
    assert encoder._memo is None
    formulas = {s.composition.reduced_formula for s in [nacl, *sample_structures[:30]]}
    assert len(distinct) == len(formulas)
    np.testing.assert_array_equal(second[-2], first[0])  # NaCl, from the memo
    np.testing.assert_array_equal(second[-1], first[0])


@pytest.mark.slow
def test_throughput_compares_weights_each_in_a_fresh_process(two_channel_weights):
    out = compare_weights(["sitenet-dim-mp36k", str(two_channel_weights)], "sample", 12, 1, (1,))
    first, second = out["sitenet-dim-mp36k"], out[str(two_channel_weights)]
    assert first["paired_ratio_to_first_median"]["dim_n_jobs_1"] == 1.0
    rate, ratio = second["median"]["dim_n_jobs_1"], second["paired_ratio_to_first_median"]
    assert rate > 0
    assert ratio["dim_n_jobs_1"] == pytest.approx(rate / first["median"]["dim_n_jobs_1"])
