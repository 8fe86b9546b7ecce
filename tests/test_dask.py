"""Scale-out on Dask: a pickled featuriser on 2 worker processes gives the in-process vectors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dimfeat.featurizer import DeepInfoMaxFeaturizer

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def structures():
    from dimfeat.datasets import load_sample

    return load_sample(as_frame=False)[0][:16]


def test_featurizer_pickles_without_its_model(structures):
    featurizer = DeepInfoMaxFeaturizer(device="cpu")
    featurizer.transform(structures[:1])  # loads the encoder lazily
    blob = pickle.dumps(featurizer)
    assert len(blob) < 5_000  # parameters only: the encoder is reloaded in each worker
    clone = pickle.loads(blob)
    assert "_lazy_encoder" not in clone.__dict__
    np.testing.assert_array_equal(
        clone.transform(structures[:2]), featurizer.transform(structures[:2])
    )


@pytest.mark.slow
def test_local_cluster_two_processes_identical_vectors(structures):
    from distributed import Client, LocalCluster

    featurizer = DeepInfoMaxFeaturizer(device="cpu")
    expected = featurizer.transform(structures)
    chunks = [structures[i : i + 4] for i in range(0, len(structures), 4)]
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=50,
        ) as cluster,
        Client(cluster) as client,
    ):
        # the recipe of docs/reliability.md: scatter the featuriser once, map over chunks
        shared = client.scatter(featurizer, broadcast=True)
        futures = client.map(DeepInfoMaxFeaturizer.transform, [shared] * len(chunks), chunks)
        parts = client.gather(futures)
        workers = {w for w in client.who_has(futures).values() for w in w}
    vectors = np.concatenate(parts)
    assert vectors.shape == (len(structures), 128)
    assert len(workers) >= 1
    # the chunks batch differently from one in-process call: compare at float32 precision
    # (the tolerance of tests/test_reliability.py; measured max 1.9e-6)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=2e-5)
