"""CPU vs CUDA: vectors of the same inputs on both devices, and inference throughput.

Usage: python -m benchmarks.archive.device_consistency --weights weights/sitenet-dim-mp36k \
           --cache .devcache/mp36k_test.npz [--n 5000] [--json out.json]
Needs only torch, numpy and safetensors (inputs come from a cache written by
dimfeat.inputs.save_inputs). Prints the largest relative difference between the CPU and CUDA
(float32, no autocast) vectors, and structures per second of the encoder on each device.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.common import machine, write_json
from dimfeat.inputs import load_inputs
from dimfeat.runtime import EncoderRuntime


def encode(runtime: EncoderRuntime, crystals, device):
    """Vectors of ``crystals`` on ``device`` and the structures per second."""
    runtime.encoder.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = runtime.encode(crystals, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, len(crystals) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--json")
    args = parser.parse_args()
    crystals = load_inputs(args.cache)[0][: args.n]
    runtime = EncoderRuntime.from_weights(args.weights)
    cpu, cpu_rate = encode(runtime, crystals, torch.device("cpu"))
    result = {"n": len(crystals), "cpu_structures_per_s": cpu_rate}
    if torch.cuda.is_available():
        encode(runtime, crystals[:512], torch.device("cuda"))  # warm-up
        gpu, gpu_rate = encode(runtime, crystals, torch.device("cuda"))
        rel = np.linalg.norm(gpu - cpu, axis=1) / np.linalg.norm(cpu, axis=1)
        result.update(
            device=torch.cuda.get_device_name(0),
            cuda_structures_per_s=gpu_rate,
            max_relative_difference=float(rel.max()),
            median_relative_difference=float(np.median(rel)),
        )
    result["machine"] = machine("cuda" if torch.cuda.is_available() else None)
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
