"""Transfer learning (paper Fig. 7): supervised Site-Net from DIM weights vs random weights.

Usage (from the repository root)::

    python -m benchmarks.paper.transfer run  [--properties formation_energy_per_atom band_gap]
                                       [--labels 50 100 250 1000] [--seeds 0 1 ... 11]
                                       [--inits random dim supervised] [--n-test 1000]
                                       [--max-steps 200]
    python -m benchmarks.paper.transfer plot [--paper benchmarks/results/paper]

Data: mp36k (CGCNN Materials Project set) with ``split.json``. Model inputs come from the cache of
:mod:`benchmarks.common` (``.devcache/mp36k_{train,test}.npz``, built from the mp36k tarball
when absent), keeping crystals with <= 50 atoms in the primitive cell. Labels are drawn, seeded by
``(seed, n_labels)``, from the train part; the same draw serves every init and property. Every
model is scored on one fixed test subset of ``--n-test`` crystals (``default_rng(2025)``) drawn
from the test part: scoring all 6,423 would cost ~50 s of CPU per run, more than training at 50
labels. Each run's test MAE is appended to ``benchmarks/results/paper/transfer.json`` as soon as
it is known, under a file lock (one process per ``--properties`` can share the file); a rerun
skips the runs already there from the same starting weights, so an interrupted benchmark resumes.

CPU budget: a run trains for at most ``--max-steps`` AdamW steps of 32 crystals
(``epochs = min(200, ceil(max_steps / steps_per_epoch))``), with early stopping (patience 20) on
10% of the drawn labels; the same budget applies to every init.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DEVCACHE, MP36K, RESULTS, ROOT, machine_line, weights_label

CACHE = DEVCACHE
FIGURES = ROOT / "docs" / "figures"
PROPERTIES = ("formation_energy_per_atom", "band_gap")
UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV"}
TEST_SEED = 2025
BATCH_SIZE = 32
#: The protocol's validation share of the labels (0.1, as when the results were computed; the
#: regressor's default is now 0.05).
VALIDATION_FRACTION = 0.1
MAX_EPOCHS = 200
#: Starting points: random weights, the DIM weights fine-tuned or frozen (head only), and a
#: model trained on the other property; then the DIM weights under other fine-tuning schedules
#: (:data:`SCHEDULES`).
INITS = ("random", "dim", "supervised", "dim-frozen", "dim-warmup", "dim-slow-encoder")


def schedule(init: str, epochs: int) -> dict:
    """``SiteNetRegressor`` settings of a start's fine-tuning schedule, for a run of ``epochs``.

    ``dim-frozen``: the head alone on the fixed DIM encoder; ``dim-warmup``: the head alone for
    the first quarter of the epochs, then both; ``dim-slow-encoder``: the encoder at a tenth of
    the head's learning rate (1e-4 against 1e-3). Every other start: the regressor's defaults.
    """
    return {
        "dim-frozen": {"freeze_encoder": True},
        "dim-warmup": {"head_warmup_epochs": math.ceil(epochs / 4)},
        "dim-slow-encoder": {"encoder_lr": 1e-4},
    }.get(init, {})


# -- data -------------------------------------------------------------------------------------
def cached_inputs(part: str) -> tuple[list, np.ndarray]:
    """Model inputs and material ids of a split part (<= 50 atoms in the primitive cell).

    The inputs come from the one cache of the whole part, :func:`benchmarks.common.mp36k_inputs`.
    """
    from benchmarks.common import mp36k_inputs

    crystals, extra = mp36k_inputs(part)
    keep = [i for i, c in enumerate(crystals) if c.n_sites <= 50]
    return [crystals[i] for i in keep], extra["material_id"][keep]


def labels() -> dict[str, dict[str, float]]:
    """``{material_id: {property: value}}`` from ``id_prop.csv`` and ``material_id_hash.csv``."""
    with tarfile.open(MP36K) as tar:

        def rows(name: str) -> list[list[str]]:
            text = tar.extractfile(f"mp36k/data/{name}").read().decode()
            return list(csv.reader(io.StringIO(text)))

        ids = {r[0]: r[1] for r in rows("material_id_hash.csv")}
        return {
            ids[r[0]]: {PROPERTIES[0]: float(r[1]), PROPERTIES[1]: float(r[2])}
            for r in rows("id_prop.csv")
        }


# -- results file -----------------------------------------------------------------------------
def load_results(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {
        "description": "Paper Fig. 7 on mp36k (CGCNN MP set, split.json): SiteNetRegressor "
        "test MAE from random vs DIM (sitenet-dim-mp36k) initial weights",
        "machine": machine_line(note="shared, CPU only, torch.set_num_threads(1)"),
        "runs": [],
    }


def save_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def append_run(path: Path, record: dict, protocol: dict) -> None:
    """Add one run to the results file under a lock, re-reading it first, so that runs of
    several processes (e.g. one per property) land in the same file."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(path)
        if results.get("protocol", protocol) != protocol:
            raise SystemExit(f"{path} was written with another protocol; use another --out")
        results["protocol"] = protocol
        results["runs"].append(record)
        save_results(path, results)


def run_key(prop: str, n: int, init: str, seed: int) -> str:
    return f"{prop}|{n}|{init}|{seed}"


def is_done(runs: list[dict], key: str, start_sha: str | None) -> bool:
    """Whether the run ``key`` is recorded, from the same start weights; refuse other weights.

    A recorded run counts only when its ``start_sha256`` (``None`` for random weights) is the
    sha256 of the weights this run would start from: results of other weights (or of runs that
    did not record theirs) are not mixed in silently.
    """
    recorded = [
        r for r in runs if run_key(r["property"], r["n_labels"], r["init"], r["seed"]) == key
    ]
    if not recorded:
        return False
    got = recorded[0].get("start_sha256", "not recorded")
    if got != start_sha:
        raise SystemExit(
            f"run {key} is recorded from start weights {got}, not {start_sha}: "
            "write to another --out"
        )
    return True


def start_shas(runs: list[dict]) -> list[str]:
    """The sha256 of the weights the recorded DIM-started runs (``dim`` and its schedules)
    started from, sorted."""
    dim = [r for r in runs if r["init"].startswith("dim")]
    return sorted({r["start_sha256"] for r in dim if r.get("start_sha256")})


def other_starts(path: Path, weights: str = "sitenet-dim-mp36k") -> list[str]:
    """The DIM start weights recorded in the results file ``path`` that are not ``weights``
    (sha256s): runs a rerun for ``weights`` would refuse to mix with (:func:`is_done`)."""
    from dimfeat.channels import read_weights_config
    from dimfeat.weights import resolve_weights

    current = read_weights_config(resolve_weights(weights))["sha256"]
    return [sha for sha in start_shas(load_results(path)["runs"]) if sha != current]


# -- runs -------------------------------------------------------------------------------------
def epochs_for(
    n_labels: int, max_steps: int, validation_fraction: float = VALIDATION_FRACTION
) -> int:
    n_train = n_labels - max(2, round(validation_fraction * n_labels))
    return min(MAX_EPOCHS, math.ceil(max_steps / math.ceil(n_train / BATCH_SIZE)))


def start_weights(init: str, prop: str, train, train_y, args) -> str | None:
    """``None`` (random), the bundled DIM weights (``dim`` and its other fine-tuning schedules,
    :func:`schedule`), or an encoder trained on the other property."""
    if init == "random":
        return None
    if init.startswith("dim"):
        return "sitenet-dim-mp36k"
    from dimfeat.regressor import SiteNetRegressor

    other = PROPERTIES[1 - PROPERTIES.index(prop)]
    folder = (
        CACHE / "transfer" / f"supervised-{other}-{args.supervised_n}-e{args.supervised_epochs}"
    )
    if not (folder / "config.json").is_file():
        rng = np.random.default_rng(TEST_SEED + 1)
        pick = rng.choice(len(train), args.supervised_n, replace=False)
        model = SiteNetRegressor(
            weights=None,
            epochs=args.supervised_epochs,
            validation_fraction=VALIDATION_FRACTION,
            device="cpu",
            verbose=True,
        ).fit([train[i] for i in pick], train_y[other][pick])
        model.save_pretrained(
            str(folder),
            note=f"supervised on {other} of {args.supervised_n} mp36k train crystals, "
            f"{args.supervised_epochs} epochs from random weights",
        )
    return str(folder)


def run(args: argparse.Namespace) -> None:
    import torch

    from dimfeat.regressor import SiteNetRegressor

    torch.set_num_threads(1)
    train, train_ids = cached_inputs("train")
    test, test_ids = cached_inputs("test")
    table = labels()
    train_y = {p: np.array([table[i][p] for i in train_ids]) for p in PROPERTIES}
    test_pick = np.sort(np.random.default_rng(TEST_SEED).choice(len(test), args.n_test, False))
    test_x = [test[i] for i in test_pick]
    results = load_results(args.out)
    protocol = {
        "train_pool": len(train),
        "test_subset": f"{args.n_test} of {len(test)} test crystals, default_rng({TEST_SEED})",
        "max_steps": args.max_steps,
        "batch_size": BATCH_SIZE,
        "regressor": f"SiteNetRegressor(lr=1e-3, weight_decay=0.01, "
        f"validation_fraction={VALIDATION_FRACTION}, "
        "patience=20, device='cpu')",
    }
    if results.get("protocol", protocol) != protocol:
        raise SystemExit(f"{args.out} was written with another protocol; use another --out")
    results["protocol"] = protocol
    from dimfeat.channels import read_weights_config
    from dimfeat.weights import resolve_weights

    shas: dict[str | None, str | None] = {}

    for prop in args.properties:
        test_y = np.array([table[test_ids[i]][prop] for i in test_pick])
        for seed in args.seeds:
            for n in args.labels:
                pick = np.random.default_rng([seed, n]).choice(len(train), n, replace=False)
                for init in args.inits:
                    weights = start_weights(init, prop, train, train_y, args)
                    if weights not in shas:  # read each start's config once
                        shas[weights] = (
                            read_weights_config(resolve_weights(weights))["sha256"]
                            if weights
                            else None
                        )
                    sha = shas[weights]
                    if is_done(results["runs"], run_key(prop, n, init, seed), sha):
                        continue
                    start = time.perf_counter()
                    epochs = epochs_for(n, args.max_steps)
                    model = SiteNetRegressor(
                        weights=weights,
                        epochs=epochs,
                        batch_size=BATCH_SIZE,
                        validation_fraction=VALIDATION_FRACTION,
                        device="cpu",
                        random_state=seed,
                        **schedule(init, epochs),
                    ).fit([train[i] for i in pick], train_y[prop][pick])
                    mae = float(np.mean(np.abs(model.predict(test_x) - test_y)))
                    record = {
                        "property": prop,
                        "n_labels": n,
                        "init": init,
                        "seed": seed,
                        "start_sha256": sha,
                        "test_mae": mae,
                        "epochs_run": len(model.history_),
                        "best_epoch": model.best_epoch_,
                        "best_valid_mae": min(h["valid_mae"] for h in model.history_),
                        "seconds": time.perf_counter() - start,
                    }
                    results["runs"].append(record)
                    append_run(args.out, record, protocol)
                    print(json.dumps(record), flush=True)


# -- figures and table ------------------------------------------------------------------------
def medians(runs: list[dict]) -> dict[tuple[str, int, str], tuple[float, int]]:
    groups: dict[tuple[str, int, str], list[float]] = {}
    for r in runs:
        groups.setdefault((r["property"], r["n_labels"], r["init"]), []).append(r["test_mae"])
    return {k: (float(np.median(v)), len(v)) for k, v in groups.items()}


def representation_results(folder: Path) -> list[dict]:
    """Rows ``{property, n_labels, name, test_mae}`` from ``folder/representation.json``, if any
    (the current weights' Fig. 8 results; the ``representation_<sha>.json`` files of earlier
    weights are not read).

    Reads the nested layout ``{"mae": {property: {model: {representation: {n: [mae, ...]}}}}}``
    written by ``benchmarks/paper``, or a list of records (bare or under ``runs``/``results``)
    with fields ``property``/``target``, ``n_labels``/``n_train``, ``test_mae``/``mae`` and
    ``representation`` (+ ``model``).
    """
    rows = []
    for path in [p for p in (folder / "representation.json",) if p.is_file()]:
        content = json.loads(path.read_text())
        if isinstance(content, dict) and isinstance(content.get("mae"), dict):
            rows += [
                {"property": prop, "n_labels": int(n), "name": f"{rep}/{model}", "test_mae": mae}
                for prop, by_model in content["mae"].items()
                for model, by_rep in by_model.items()
                for rep, by_n in by_rep.items()
                for n, maes in by_n.items()
                for mae in maes
            ]
            continue
        records = content if isinstance(content, list) else []
        if isinstance(content, dict):
            records = next((content[k] for k in ("runs", "results", "records") if k in content), [])
        for r in records:
            if not isinstance(r, dict):
                continue
            prop = r.get("property", r.get("target"))
            n = r.get("n_labels", r.get("n_train"))
            mae = r.get("test_mae", r.get("mae"))
            name = "/".join(str(r[k]) for k in ("representation", "model") if k in r)
            if None not in (prop, n, mae):
                rows.append({"property": prop, "n_labels": int(n), "name": name, "test_mae": mae})
    return rows


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_results(args.out)["runs"]
    FIGURES.mkdir(parents=True, exist_ok=True)
    props = [p for p in PROPERTIES if any(r["property"] == p for r in runs)]
    inits = [i for i in INITS if any(r["init"] == i for r in runs)]
    colours = {
        "random": "tab:grey",
        "dim": "tab:blue",
        "supervised": "tab:orange",
        "dim-frozen": "tab:cyan",
        "dim-warmup": "tab:green",
        "dim-slow-encoder": "tab:purple",
    }
    fig, axes = plt.subplots(1, len(props), figsize=(5.5 * len(props), 4), squeeze=False)
    for ax, prop in zip(axes[0], props, strict=False):
        counts = sorted({r["n_labels"] for r in runs if r["property"] == prop})
        for k, init in enumerate(inits):
            data = [
                [r["test_mae"] for r in runs if (r["property"], r["n_labels"], r["init"]) == key]
                for key in ((prop, n, init) for n in counts)
            ]
            pos = np.arange(len(counts)) + (k - (len(inits) - 1) / 2) * 0.3
            box = ax.boxplot(data, positions=pos, widths=0.25, patch_artist=True)
            for patch in box["boxes"]:
                patch.set_facecolor(colours[init])
            for x, d in zip(pos, data, strict=True):  # every seed, visible with few seeds
                ax.plot(np.full(len(d), x), d, ".", color="black", ms=4)
            ax.plot([], [], "s", color=colours[init], label=f"{init} init")
        ax.set_xticks(range(len(counts)), [str(n) for n in counts])
        ax.set(xlabel="training labels", ylabel=f"test MAE ({UNITS[prop]})", title=prop)
        ax.legend()
    fig.suptitle("Transfer learning, SiteNetRegressor on mp36k (Fig. 7)")
    fig.tight_layout()
    fig.savefig(FIGURES / "transfer_boxplots.png", dpi=120)

    rep = representation_results(args.paper)
    med = medians(runs)
    fig, axes = plt.subplots(1, len(props), figsize=(5.5 * len(props), 4), squeeze=False)
    for ax, prop in zip(axes[0], props, strict=False):
        for init in inits:
            pts = sorted((n, m) for (p, n, i), (m, _) in med.items() if (p, i) == (prop, init))
            ax.plot(*zip(*pts, strict=True), "o-", lw=2, color=colours[init], label=f"{init} init")
        for name in sorted({r["name"] for r in rep if r["property"] == prop}):
            by_n: dict[int, list[float]] = {}
            for r in rep:
                if (r["property"], r["name"]) == (prop, name):
                    by_n.setdefault(r["n_labels"], []).append(r["test_mae"])
            ns = sorted(by_n)
            style = "--" if name.endswith("mlp") else ":"
            ax.plot(ns, [np.median(by_n[n]) for n in ns], style, lw=1, label=name)
        ax.set(xscale="log", yscale="log", xlabel="training labels")
        ax.set_ylabel(f"median test MAE ({UNITS[prop]}, log scale)")
        counts = sorted({n for (p, n, _) in med if p == prop})
        ax.set_xticks(counts, [str(n) for n in counts], minor=False)
        ax.minorticks_off()
        ax.set_title(prop if rep else f"{prop}\n(no representation results yet)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "transfer_vs_representation.png", dpi=120)
    print(table(runs))
    write_table(DOC, runs, load_results(args.out).get("machine", ""))


DOC = ROOT / "docs" / "transfer.md"
MARKERS = ("<!-- transfer-table:start -->", "<!-- transfer-table:end -->")


def write_table(doc: Path, runs: list[dict], machine: str) -> None:
    """Replace the block between :data:`MARKERS` in ``doc`` by :func:`table` of ``runs``.

    Raises
    ------
    SystemExit
        When ``doc`` lacks the markers (nothing is written).
    """
    text = doc.read_text()
    start, end = (text.find(m) for m in MARKERS)
    if start < 0 or end < start:
        raise SystemExit(f"{doc} has no {MARKERS[0]} ... {MARKERS[1]} block to regenerate")
    seeds = sorted({r["seed"] for r in runs})
    starts = " and ".join(weights_label(sha) for sha in start_shas(runs))
    block = (
        f"{MARKERS[0]}\n"
        "<!-- written by `python -m benchmarks.paper.transfer plot`; do not edit -->\n\n"
        f"{len(runs)} runs, seeds {seeds[0]}-{seeds[-1]} (not every cell has every seed: see the "
        f"run counts); machine: {machine}."
        + (f" DIM starts (dim init and its schedules): {starts}." if starts else "")
        + "\n"
        + table(runs)
        + schedule_table(runs)
        + "\n\n"
    )
    doc.write_text(text[:start] + block + text[end:])


#: Fine-tuning schedules of the DIM start, compared with the plain ``dim`` start.
SCHEDULES = ("dim-warmup", "dim-slow-encoder")


def schedule_table(runs: list[dict]) -> str:
    """Markdown: for each schedule, the seeds where it beats the plain DIM start on the
    validation MAE (the labels' own validation part: how a schedule is chosen) and on the
    test MAE; empty when no schedule was run.
    """
    by_key = {(r["property"], r["n_labels"], r["init"], r["seed"]): r for r in runs}
    lines = []
    for prop in PROPERTIES:
        present = [
            s for s in SCHEDULES if any((r["property"], r["init"]) == (prop, s) for r in runs)
        ]
        if not present:
            continue
        lines += [
            "",
            f"**{prop}, schedules against the plain DIM start**: seeds (paired) where the "
            "schedule has the lower validation MAE / test MAE",
            "",
            "| labels | " + " | ".join(present) + " |",
            "|---|" + "---|" * len(present),
        ]
        for n in sorted({r["n_labels"] for r in runs if r["property"] == prop}):
            cells = []
            for init in present:
                pairs = [
                    (r, by_key[(prop, n, "dim", seed)])
                    for (p, k, i, seed), r in by_key.items()
                    if (p, k, i) == (prop, n, init) and (prop, n, "dim", seed) in by_key
                ]
                valid = sum(a["best_valid_mae"] < b["best_valid_mae"] for a, b in pairs)
                test = sum(a["test_mae"] < b["test_mae"] for a, b in pairs)
                cells.append(f"{valid}/{len(pairs)} / {test}/{len(pairs)}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(runs: list[dict]) -> str:
    """Markdown: median [quartiles] of the test MAE per property, label count and start, and
    for each pre-trained start the seeds (paired: same labels, same head seed) it beats random.
    """
    by_key = {(r["property"], r["n_labels"], r["init"], r["seed"]): r["test_mae"] for r in runs}
    lines = []
    for prop in PROPERTIES:
        counts = sorted({r["n_labels"] for r in runs if r["property"] == prop})
        if not counts:
            continue
        inits = [i for i in INITS if any((r["property"], r["init"]) == (prop, i) for r in runs)]
        lines += [
            "",
            f"**{prop}**: test MAE ({UNITS[prop]}), median [quartiles] over seeds (runs); "
            "paired: seeds where the start beats random init on the same labels",
            "",
            "| labels | "
            + " | ".join(f"{i} init" for i in inits)
            + " | "
            + " | ".join(f"{i} better" for i in inits if i != "random")
            + " |",
            "|---|" + "---|" * (2 * len(inits) - 1),
        ]
        for n in counts:
            cells, wins = [], []
            for init in inits:
                v = [m for (p, k, i, _), m in by_key.items() if (p, k, i) == (prop, n, init)]
                q1, q2, q3 = np.percentile(v, [25, 50, 75]) if v else (np.nan,) * 3
                cells.append(f"{q2:.3f} [{q1:.3f}, {q3:.3f}] ({len(v)})")
                if init != "random":
                    pairs = [
                        (m, by_key[(p, k, "random", seed)])
                        for (p, k, i, seed), m in by_key.items()
                        if (p, k, i) == (prop, n, init) and (p, k, "random", seed) in by_key
                    ]
                    wins.append(f"{sum(a < b for a, b in pairs)}/{len(pairs)}")
            lines.append(f"| {n} | " + " | ".join(cells + wins) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["run", "plot"])
    parser.add_argument("--properties", nargs="+", default=list(PROPERTIES), choices=PROPERTIES)
    parser.add_argument("--labels", nargs="+", type=int, default=[50, 100, 250, 1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(12)))
    parser.add_argument(
        "--inits",
        nargs="+",
        default=["random", "dim", "supervised"],
        choices=list(INITS),
    )
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--supervised-n", type=int, default=5000)
    parser.add_argument("--supervised-epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "paper" / "transfer.json")
    parser.add_argument("--paper", type=Path, default=RESULTS / "paper")
    args = parser.parse_args(argv)
    (run if args.command == "run" else plot)(args)


if __name__ == "__main__":
    sys.exit(main())
