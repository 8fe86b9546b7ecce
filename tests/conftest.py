"""Session-scoped fixtures: real structures and featurisers, each built once per test run.

The featuriser fixtures are shared by many tests: never call ``set_params``/``fit`` on them
(``sklearn.base.clone`` them first).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from dimfeat import DeepInfoMaxFeaturizer
from dimfeat.channels import CHANNELS
from dimfeat.datasets import load_sample
from dimfeat.weights import DEFAULT_WEIGHTS, read_config, resolve_weights

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
#: Environment variable naming the project's data folder (the one place tests look for it).
DATA_ENV = "DIMFEAT_SHARED_DATA"  # the name the benchmarks read too
#: Real data shared by every developer: ``$DIMFEAT_TEST_DATA``, else ``../shared/data`` from the
#: project root (holding ``matminer/matbench_phonons.json.gz`` and ``mp36k/``); may be absent,
#: and then the tests that need it skip and the summary says how many.
SHARED_DATA = Path(os.environ.get(DATA_ENV) or TESTS.parents[1] / "shared" / "data").expanduser()
MATMINER = SHARED_DATA / "matminer"
MP36K = SHARED_DATA / "mp36k"
#: Bundled single-channel weights (one encoder, labels ``dim_0`` ...): the folder for tests that
#: inspect or tamper with the single-channel layout (``config["encoder"]``, unprefixed tensor
#: names). The default, :data:`dimfeat.weights.DEFAULT_WEIGHTS`, is two-channel.
SINGLE_CHANNEL_WEIGHTS = "sitenet-dim-mp36k-single-channel"
#: Every bundled weights folder, the two-channel default first: for behaviour that must hold for
#: weights of either kind.
BUNDLED_WEIGHTS = (DEFAULT_WEIGHTS, SINGLE_CHANNEL_WEIGHTS)


def weights_labels(weights: str = DEFAULT_WEIGHTS) -> list[str]:
    """Feature labels of bundled (or local) weights, read from their ``config.json``: ``dim_0``
    ... for one channel, ``dim_ctx_0`` ... then ``dim_struct_0`` ... for two."""
    config = read_config(resolve_weights(weights))
    if "channels" not in config:
        return [f"dim_{i}" for i in range(config["encoder"]["global_dim"])]
    return [
        f"{prefix}_{i}"
        for channel, prefix in CHANNELS.items()
        for i in range(config["channels"][channel]["encoder"]["global_dim"])
    ]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Say how many tests skipped because the data folder lacks what they need, and the fix."""
    skipped = terminalreporter.stats.get("skipped", [])
    missing = [r for r in skipped if str(SHARED_DATA) in str(getattr(r, "longrepr", ""))]
    if missing:
        where = "not found at" if not SHARED_DATA.is_dir() else "incomplete at"
        terminalreporter.write_line(
            f"{len(missing)} tests skipped: data folder {where} {SHARED_DATA}; set "
            f"{DATA_ENV}=/path/to/data (a folder holding matminer/matbench_phonons.json.gz and "
            "mp36k/mp36k.tar.gz, mp36k/split.json) to run them"
        )


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crystals_module = _load_module("dimfeat_test_crystals", DATA / "crystals.py")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the test machines are small and shared, and this keeps CPU results
    bitwise reproducible between runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_pymatgen():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pymatgen")
        warnings.filterwarnings("ignore", module="spglib")
        yield


# -- real data -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sample() -> pd.DataFrame:
    """The bundled sample: 1,000 Materials Project crystals with formation energies."""
    return load_sample()


@pytest.fixture(scope="session")
def sample_structures(sample) -> list:
    return sample["structure"].tolist()


@pytest.fixture(scope="session")
def small_structures(sample) -> list:
    """The first 200 sample crystals with at most 6 atoms in the stored cell (cheap to train on)."""
    return [s for s in sample["structure"] if len(s) <= 6][:200]


@pytest.fixture(scope="session")
def invariance_set(sample) -> tuple[list, list]:
    """48 sample crystals (<= 16 atoms) and copies perturbed by 0.05 Å with fixed seeds.

    The perturbation breaks symmetry, so that symmetry cannot hide an invariance bug.
    """
    base = [s for s in sample["structure"] if len(s) <= 16][:48]
    perturbed = [s.copy().perturb(0.05, seed=k) for k, s in enumerate(base)]
    return base, perturbed


# -- classic crystals ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def classic() -> dict:
    """CsCl, NaCl (conventional cell), Si (diamond, conventional), SrTiO3, wurtzite ZnO."""
    return {name: build() for name, build in crystals_module.CRYSTALS.items()}


@pytest.fixture(scope="session")
def cscl(classic):
    return classic["CsCl"]


@pytest.fixture(scope="session")
def nacl(classic):
    return classic["NaCl"]


@pytest.fixture(scope="session")
def si(classic):
    return classic["Si"]


@pytest.fixture(scope="session")
def srtio3(classic):
    return classic["SrTiO3"]


@pytest.fixture(scope="session")
def zno(classic):
    return classic["ZnO"]


# -- featurisers ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def featurizer() -> DeepInfoMaxFeaturizer:
    """The default featuriser (bundled weights, read from the local file once), fitted, on CPU."""
    return DeepInfoMaxFeaturizer(device="cpu").fit([])


@pytest.fixture(scope="session")
def untrained_featurizer() -> DeepInfoMaxFeaturizer:
    """The paper's untrained baseline: random weights seeded by ``random_state=0``, on CPU."""
    return DeepInfoMaxFeaturizer(weights=None, device="cpu").fit([])
