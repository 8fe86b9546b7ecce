"""The CUDA path against the CPU, where a GPU is; every test skips on a machine without one.

These run on a lent GPU machine through ``benchmarks/perf/gpu_run.sh`` (with the speed
figures of ``benchmarks/perf/gpu.py``); CI has no GPU. They check what only a GPU can: the
vectors computed there, with the calling process encoding and with worker processes building
the inputs for it, training there, and weights trained there read back on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dimfeat import DeepInfoMaxFeaturizer, SiteNetRegressor
from dimfeat.inputs import InvalidStructureError

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

#: Largest difference of a vector element between the GPU and the CPU, relative to the crystal's
#: largest element: float32 kernels differ in their summation order (TF32 is off for float32
#: matrix products by default).
GPU_TOLERANCE = 1e-4


def _relative(new: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per crystal: the largest absolute difference over the largest absolute reference value."""
    return np.abs(new - reference).max(axis=1) / np.abs(reference).max(axis=1)


def test_vectors_on_the_gpu_are_those_of_the_cpu(sample_structures):
    structures = sample_structures[:300]
    cpu = DeepInfoMaxFeaturizer(device="cpu").transform(structures)
    gpu = DeepInfoMaxFeaturizer(device="cuda").transform(structures)
    assert gpu.dtype == np.float32 and np.isfinite(gpu).all()
    assert _relative(gpu, cpu).max() <= GPU_TOLERANCE
    # and they are not the vectors of another crystal: the GPU keeps the input order
    assert _relative(gpu[::-1], cpu).max() > 1e-2


def test_worker_processes_build_the_inputs_the_gpu_encodes(sample_structures):
    structures = sample_structures[:300]
    here = DeepInfoMaxFeaturizer(device="cuda").transform(structures)
    built_in_workers = DeepInfoMaxFeaturizer(device="cuda", n_jobs=2).transform(structures)
    # the chunks are encoded in other batches: only the float summation order may differ
    assert _relative(built_in_workers, here).max() <= GPU_TOLERANCE


def test_a_bad_structure_on_the_gpu_path_is_named_or_a_nan_row(sample_structures):
    structures = [*sample_structures[:99], "not a structure", *sample_structures[99:150]]
    with pytest.raises(InvalidStructureError, match=r"\(structure 99\)"):
        DeepInfoMaxFeaturizer(device="cuda", n_jobs=2).transform(structures)
    vectors = DeepInfoMaxFeaturizer(device="cuda", n_jobs=2).featurize_many(
        structures, ignore_errors=True, pbar=False
    )
    vectors = np.asarray(vectors, dtype=float)
    assert np.isnan(vectors[99]).all() and np.isfinite(np.delete(vectors, 99, axis=0)).all()


def test_weights_trained_on_the_gpu_give_the_same_vectors_on_the_cpu(small_structures, tmp_path):
    structures = small_structures[:64]
    trained = DeepInfoMaxFeaturizer(
        weights=None, epochs=2, site_budget=400, device="cuda", random_state=0
    ).fit(structures)
    losses = [record["train_loss"] for record in trained.history_]
    assert len(losses) == 2 and np.isfinite(losses).all()
    on_gpu = trained.transform(structures)
    folder = trained.save_pretrained(str(tmp_path / "trained-on-gpu"))
    on_cpu = DeepInfoMaxFeaturizer(weights=folder, device="cpu").transform(structures)
    assert _relative(on_cpu, on_gpu).max() <= GPU_TOLERANCE
    untrained = DeepInfoMaxFeaturizer(weights=None, device="cpu", random_state=0)
    assert _relative(untrained.fit(structures).transform(structures), on_cpu).max() > 1e-3


def test_the_regressor_fits_and_predicts_on_the_gpu(sample):
    structures = sample["structure"].tolist()[:64]
    y = sample["formation_energy_per_atom"].to_numpy(dtype=float)[:64]
    model = SiteNetRegressor(
        epochs=3, batch_size=16, validation_fraction=0, device="cuda", random_state=0
    ).fit(structures, y)
    predicted = model.predict(structures)
    assert predicted.shape == (64,) and np.isfinite(predicted).all()
    assert model.history_[-1]["train_loss"] < model.history_[0]["train_loss"]
    on_cpu = model.set_params(device="cpu").predict(structures)
    np.testing.assert_allclose(on_cpu, predicted, rtol=1e-4, atol=1e-4 * np.abs(y).max())
