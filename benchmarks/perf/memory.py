"""Peak memory of streaming featurisation: the first 5,000 vs all 36,737 structures of mp36k.

Each size runs ``dimfeat.streaming.featurize_to_file`` over the tarball in a fresh subprocess
(parquet parts, ``chunk_size`` structures per chunk). The child samples its resident set size
every 0.5 s and reports ``ru_maxrss``; the parent also reads ``RUSAGE_CHILDREN``. The acceptance
criterion is a peak for 36,737 structures within 25% of the peak for 5,000.

Usage::

    python -m benchmarks.perf.memory                      # both sizes, ~15-60 min on 2 busy cores
    python -m benchmarks.perf.memory --sizes 500 2000     # a quick look

Writes ``benchmarks/results/perf/memory.json`` (after each size, so a partial run leaves numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _child(args: argparse.Namespace) -> None:
    import psutil

    process = psutil.Process()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - start, process.memory_info().rss / 2**20))
            stop.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    import warnings

    warnings.simplefilter("ignore")
    from dimfeat.featurizer import DeepInfoMaxFeaturizer
    from dimfeat.streaming import featurize_to_file

    after_import = process.memory_info().rss / 2**20
    summary = featurize_to_file(
        args.data,
        args.output,
        DeepInfoMaxFeaturizer(device="cpu"),
        chunk_size=args.chunk_size,
        limit=args.limit,
        progress=False,
        ignore_errors=True,
    )
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    rss = [m for _, m in samples]
    tail = rss[len(rss) // 2 :] or rss
    result = {
        "n_structures": summary.n_rows,
        "n_errors": summary.n_errors,
        "n_chunks": summary.n_chunks,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mib": round(after_import, 1),
        "max_sampled_rss_first_half_mib": round(max(rss[: len(rss) // 2] or rss), 1),
        "max_sampled_rss_second_half_mib": round(max(tail), 1),
        "rss_samples_mib": [round(m, 1) for m in rss[:: max(1, len(rss) // 60)]],
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    # the parent only: the child runs this file in a bare interpreter, importing dimfeat alone
    from benchmarks.common import MP36K, RESULTS, machine, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(MP36K))
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 36737])
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--out", default=str(RESULTS / "perf" / "memory.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "peak RSS of dimfeat.streaming.featurize_to_file over mp36k.tar.gz",
        "data": str(args.data),
        "chunk_size": args.chunk_size,
        "machine": {**machine(), "load_average_at_start": os.getloadavg()},
        "runs": [],
    }
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                sys.executable,
                "-m",
                "benchmarks.perf.memory",  # as a module: the child imports benchmarks.common too
                "--child",
                "--data",
                args.data,
                "--chunk-size",
                str(args.chunk_size),
                "--limit",
                str(size),
                "--output",
                str(Path(tmp) / "features"),
            ]
            root = Path(__file__).resolve().parents[2]
            done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=root)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            raise SystemExit(f"size {size} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
        run = json.loads(lines[-1][len("RESULT ") :])
        run["requested"] = size
        run["children_maxrss_mib_so_far"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        )
        report["runs"].append(run)
        print(
            f"{run['n_structures']:6d} structures: peak RSS {run['peak_rss_mib']:.0f} MiB, "
            f"{run['seconds']:.0f} s",
            flush=True,
        )
        if len(report["runs"]) >= 2:
            small, large = report["runs"][0], report["runs"][-1]
            report["ratio_peak_large_over_small"] = round(
                large["peak_rss_mib"] / small["peak_rss_mib"], 3
            )
            report["within_25_percent"] = report["ratio_peak_large_over_small"] <= 1.25
        write_json(out, report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
