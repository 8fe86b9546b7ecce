"""Encoder speed-ups that were tried and dropped: each against the shipped encoder, in one run.

Usage: python -m benchmarks.archive.encoder_variants [--n 512] [--json PATH]

Data: the first ``--n`` crystals of the bundled sample (:func:`dimfeat.datasets.load_sample`),
collated into one batch; the single-channel weights ``sitenet-dim-mp36k-single-channel``;
CPU, one thread. For each
variant it prints the time of the local encoder (the part that scales with the bonds, three
quarters of ``transform``) against the shipped one measured in the same run, and the largest
difference of the crystal vectors relative to their largest element:

* ``distance table``: the distance embedding and the distance blocks of the first attention and
  value layers are a function of the distance alone, so they can be tabulated once on a grid
  (step 1/256 Å, up to the last Gaussian centre plus 8 widths) and interpolated linearly.
  Fewer FLOPs and somewhat faster, but the interpolation error exceeds the 1e-5 tolerance of
  the regression vectors.
* ``torch.compile``: inductor fuses the Mish/LayerNorm/add chains over the bonds. Faster in
  steady state, but the first call compiles for about a minute, needs a C++ compiler at run
  time and recompiles for new shapes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from dimfeat.datasets import load_sample
from dimfeat.inputs import collate
from dimfeat.runtime import EncoderRuntime

STEP = 1 / 256


def _timed(f, repeats: int = 3) -> float:
    f()
    start = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - start) / repeats


def tabulated_local(encoder, step: float = STEP):
    """``encode_local`` with the distance parts read from a linearly interpolated table."""
    d_model = encoder.config.embed_dim
    last = float(encoder.distance_basis.centres[-1]) + 8 * encoder.distance_basis.width
    grid = torch.arange(int(last / step) + 2, dtype=torch.float32) * step
    e = encoder.embed_distances(encoder.expand_distances(grid))
    w_att = encoder.attention[0].weight.split(d_model, dim=1)[2]
    w_val = encoder.values[0].weight.split(d_model, dim=1)[2]
    table = torch.cat([e @ w_att.T, e @ w_val.T], 1)
    slope = (table[1:] - table[:-1]).contiguous()
    table = table[:-1].contiguous()
    top = table.shape[0] - 1

    def bond(net, x_i, elements, neighbours, part):
        w_i, w_j, _ = net[0].weight.split(d_model, dim=1)
        h = (x_i @ w_i.T).unsqueeze(1) + (elements @ w_j.T)[neighbours] + part + net[0].bias
        return net[1:](h)

    def local(site, neighbours, distances, mask):
        elements = encoder.site_embedding(encoder.element_features)
        x_i = elements[site]
        u = (distances / step).clamp(max=top)
        k = u.long()
        part = torch.addcmul(table[k], slope[k], (u - k).unsqueeze(-1))
        p_att, p_val = part.split(part.shape[-1] // 2, dim=-1)
        logits = bond(encoder.attention, x_i, elements, neighbours, p_att).squeeze(-1)
        weights = torch.softmax(logits.masked_fill(~mask, torch.finfo(logits.dtype).min), -1)
        values = bond(encoder.values, x_i, elements, neighbours, p_val)
        return encoder.local_mu(torch.einsum("sm,smd->sd", weights, values))

    return local


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runtime = EncoderRuntime.from_weights("sitenet-dim-mp36k-single-channel")
    structures, _ = load_sample(as_frame=False)
    batch = collate(runtime.build(structures[: args.n])[0])
    encoder = runtime.encoder.eval()
    args_local = (batch.site_species, batch.neighbour_species, batch.distances, batch.mask)

    def vectors(local):
        mu = local(*args_local)
        return encoder.encode_global(mu, batch.crystal_index, batch.n_crystals)[0]

    def shipped(*a):
        return encoder.encode_local(*a)[0]

    out = {"n_crystals": args.n, "n_bonds": int(batch.mask.sum()), "variants": {}}
    with torch.inference_mode():
        reference = vectors(shipped)
        scale = reference.abs().max(1).values
        base = _timed(lambda: shipped(*args_local))
        out["shipped_local_seconds"] = base
        variants = {"distance table": tabulated_local(encoder)}
        if not args.no_compile:
            start = time.perf_counter()
            compiled = torch.compile(shipped, dynamic=True)
            compiled(*args_local)
            out["compile_seconds"] = time.perf_counter() - start
            variants["torch.compile"] = compiled
        for name, local in variants.items():
            error = ((vectors(local) - reference).abs().max(1).values / scale).max().item()
            seconds = _timed(lambda local=local: local(*args_local))
            out["variants"][name] = {
                "local_seconds": seconds,
                "speed_up": base / seconds,
                "max_relative_difference": error,
            }
    print(f"shipped local encoder: {base:.3f} s for {args.n} crystals ({out['n_bonds']} bonds)")
    if "compile_seconds" in out:
        print(f"torch.compile first call: {out['compile_seconds']:.0f} s")
    for name, v in out["variants"].items():
        print(
            f"{name}: {v['local_seconds']:.3f} s, x{v['speed_up']:.2f} the shipped speed, "
            f"max relative difference {v['max_relative_difference']:.1e}"
        )
    if args.json is not None:
        from benchmarks.common import machine, write_json

        out["machine"] = machine()
        write_json(args.json, out)


if __name__ == "__main__":
    main()
