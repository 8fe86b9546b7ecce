"""DDP training under torchrun (2 CPU processes, gloo) equals one process over the same batches.

The file is also the script the test runs: ``python -m torch.distributed.run --nproc_per_node=2
tests/test_distributed.py ddp OUT`` trains on cached model inputs, and ``_reference`` (run in
the test process) is the single-process run over the same global batches (each global step:
the 2 batches' gradients, computed with the 2 ranks' random streams, averaged, then one AdamW
step). Both run with one thread per process, as torchrun sets.

Tolerance: the two runs do the same arithmetic (a sum of two gradients is commutative), so the
final parameters agree to 1e-6 absolute (measured: bit-identical, max |diff| 0.0, on a 2-core
x86-64 CPU, 100 structures, 3 global steps).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ATOL = 1e-6
N_STRUCTURES = 100
SITE_BUDGET = 150
WORLD_SIZE = 2


def _config():
    from dimfeat.training import TrainingConfig

    return TrainingConfig(
        epochs=1,
        site_budget=SITE_BUDGET,
        validation_fraction=0.0,
        patience=None,
        mixed_precision=False,
        seed=0,
    )


def _encoder():
    from dimfeat.encoder import EncoderConfig, SiteNetEncoder

    torch.manual_seed(0)
    return SiteNetEncoder(EncoderConfig())


def _save(out: Path, trainer, name: str) -> None:
    state = {k: v.detach().cpu().numpy() for k, v in trainer.encoder.state_dict().items()}
    np.savez(out / f"{name}.npz", **state)
    (out / f"{name}.json").write_text(json.dumps(trainer.history))


def _ddp(out: Path) -> None:
    from dimfeat.distributed import init_from_env, is_main_process
    from dimfeat.inputs import load_inputs
    from dimfeat.training import DIMTrainer

    device = init_from_env("cpu")
    crystals, _ = load_inputs(out / "inputs.npz")
    trainer = DIMTrainer(_encoder(), _config(), device, checkpoint_dir=out / "ckpt")
    trainer.fit(crystals, [])
    if is_main_process():
        _save(out, trainer, "ddp")
    torch.distributed.destroy_process_group()


def _reference(out: Path) -> None:
    from dimfeat.distributed import global_steps, rank_seed
    from dimfeat.inputs import batches_by_site_budget, collate, load_inputs
    from dimfeat.training import DIMTrainer

    crystals, _ = load_inputs(out / "inputs.npz")
    config = _config()
    trainer = DIMTrainer(_encoder(), config, torch.device("cpu"))
    generators = [
        torch.Generator().manual_seed(rank_seed(config.seed, r)) for r in range(WORLD_SIZE)
    ]
    params = trainer._parameters()
    order = np.random.default_rng([config.seed, 0]).permutation(len(crystals))
    groups = [g for g in batches_by_site_budget(crystals, SITE_BUDGET, order) if len(g) >= 2]
    trainer.encoder.train()
    trainer.criterion.train()
    losses = []
    for step in global_steps(groups, WORLD_SIZE):
        summed: list[torch.Tensor | None] = [None] * len(params)
        for rank, group in enumerate(step):
            trainer.optimizer.zero_grad(set_to_none=True)
            batch = collate([crystals[i] for i in group])
            terms = trainer.criterion(trainer.encoder, batch, generators[rank])
            terms.loss.backward()
            losses.append(float(terms.loss.detach()))
            for k, p in enumerate(params):
                if p.grad is not None:
                    summed[k] = p.grad.clone() if summed[k] is None else summed[k] + p.grad
        for p, g in zip(params, summed, strict=True):
            p.grad = None if g is None else g / WORLD_SIZE
        trainer.optimizer.step()
    trainer.history = [{"train_loss": float(np.mean(losses)), "n_steps": len(groups) // 2}]
    _save(out, trainer, "reference")


@pytest.fixture(scope="module")
def sample_structures():
    from dimfeat.datasets import load_sample

    structures, _ = load_sample(as_frame=False)
    return structures


@pytest.mark.slow
def test_torchrun_two_cpu_processes_match_single_process(tmp_path, sample_structures):
    from dimfeat.inputs import build_many, save_inputs

    crystals, _ = build_many(sample_structures[:N_STRUCTURES], max_atoms=50)
    save_inputs(tmp_path / "inputs.npz", crystals)
    # the ranks import the dimfeat under test (this checkout), not whichever one is installed
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    script = str(Path(__file__).resolve())
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={WORLD_SIZE}",
            "--standalone",
            script,
            "ddp",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as torchrun does for each rank
        _reference(tmp_path)
    finally:
        torch.set_num_threads(threads)

    history = json.loads((tmp_path / "ddp.json").read_text())
    reference_history = json.loads((tmp_path / "reference.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert history[0]["train_loss"] == pytest.approx(reference_history[0]["train_loss"], rel=1e-5)
    # only rank 0 wrote the checkpoint, and it is there
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()
    assert not list((tmp_path / "ckpt").glob("*.tmp"))

    trained = np.load(tmp_path / "ddp.npz")
    reference = np.load(tmp_path / "reference.npz")
    start = {k: v.detach().numpy() for k, v in _encoder().state_dict().items()}
    assert set(trained.files) == set(reference.files)
    worst = max(float(np.abs(trained[k] - reference[k]).max()) for k in trained.files)
    moved = max(float(np.abs(trained[k] - start[k]).max()) for k in trained.files)
    print(f"DDP vs single process: max |diff| {worst:.3g}; max change from start {moved:.3g}")
    assert moved > 1e-3, "training did not move the weights"
    assert worst <= ATOL


def test_sharding_is_deterministic_and_complete():
    from dimfeat.distributed import global_steps, shard_groups

    groups = [np.array([i]) for i in range(7)]
    assert [len(s) for s in global_steps(groups, 2)] == [2, 2, 2]
    rank0 = shard_groups(groups, 0, 2)
    rank1 = shard_groups(groups, 1, 2)
    assert [int(g[0]) for g in rank0] == [0, 2, 4]
    assert [int(g[0]) for g in rank1] == [1, 3, 5]


def test_single_process_has_no_distributed_context():
    from dimfeat.distributed import active_context, is_main_process

    assert active_context() is None
    assert is_main_process()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, folder = sys.argv[1], Path(sys.argv[2])
    {"ddp": _ddp, "reference": _reference}[mode](folder)
