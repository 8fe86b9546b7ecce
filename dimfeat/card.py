"""Model cards for weights folders, written from ``config.json`` (never by hand)."""

from __future__ import annotations

from typing import Any

from dimfeat.record import TrainingRecord

__all__ = ["model_card"]

_CITATION = """```bibtex
@article{moran2025dim,
  title   = {Deep InfoMax as an effective self-supervised learning methodology in
             materials informatics},
  author  = {Moran, Michael and Gaultois, Michael W. and Gusev, Vladimir V. and
             Antypov, Dmytro and Rosseinsky, Matthew J.},
  journal = {Digital Discovery},
  volume  = {4},
  pages   = {790--811},
  year    = {2025},
  doi     = {10.1039/d4dd00202d}
}
```"""


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _recipe(config: dict[str, Any]) -> list[str]:
    """Bullet lines naming the objective's choices (distance input, false samples, KL weight)."""
    settings = (config.get("training") or {}).get("settings") or {}
    if not settings:
        return []
    enc = config["encoder"]
    expansion = enc.get("distance_expansion", "linear")
    distance = (
        f"a basis of {enc.get('n_gaussians')} Gaussians on 0-{enc.get('distance_cutoff')} Å"
        if expansion == "gaussian"
        else "a single linear input (the paper's)"
    )
    kinds = ", ".join(settings.get("false_samples", []))
    local = settings.get("local_false_samples")
    if local is not None:
        kinds = f"{kinds} (local loss: {', '.join(local)})"
    if settings.get("synthetic_weight", 1.0) != 1.0:
        kinds = f"{kinds}; each synthetic kind weighted {settings['synthetic_weight']} of other"
    strain = settings.get("strain_range")
    if strain is not None and tuple(strain) != (1.05, 1.25) and "strain" in kinds:
        kinds = f"{kinds}; strain factors {strain[0]:g}-{strain[1]:g}"
    if settings.get("global_trains_local"):
        kinds = f"{kinds}; the global loss also trains the local encoder"
    return [
        f"- Distance input: {distance}.",
        f"- False samples: {kinds}.",
        f"- Local constituents: {settings.get('local_constituent')}; pairs scored per "
        f"environment: {settings.get('local_pairs') or 'all'}; sites per synthetic crystal in "
        f"the global loss: {settings.get('global_sites') or 'all'}.",
        f"- Classifier projection of the vectors: {settings.get('critic', 'mlp')}.",
        f"- Loss = {settings.get('alpha')} x Jensen-Shannon + {settings.get('beta')} x KL; AdamW, "
        f"learning rate {settings.get('lr')}, {settings.get('site_budget')} sites per batch.",
    ]


def _curve_table(selection: dict[str, Any]) -> list[str]:
    """The train-split probe and geometry scores of each scored epoch, as a Markdown table."""
    lines = [
        "## Selection curve",
        "",
        selection.get("description", ""),
        "",
        "| epoch | probe MAE / untrained | polymorph separation | ranking (Ridge) | "
        "ranking (MLP) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for epoch, row in sorted(selection["curve"].items(), key=lambda kv: int(kv[0])):
        mark = " (selected)" if int(epoch) == selection.get("epoch") else ""
        lines.append(
            f"| {epoch}{mark} | {row['relative_probe']:.3f} | {row['separation']:.4f} | "
            f"{row['ranking_ridge']:.3f} | {row['ranking_mlp']:.3f} |"
        )
    return [*lines, ""]


def model_card(config: dict[str, Any]) -> str:
    """Markdown model card (Hugging Face front matter + sections) for a weights ``config``."""
    record = TrainingRecord.from_dict(config.get("training") or None)
    training = record is not None
    data = record.data if record else {}
    history = record.history if record else []
    selection = (record.selection if record else None) or {}
    best = min(
        (h for h in history if "valid_loss" in h), key=lambda h: h["valid_loss"], default=None
    )
    if selection.get("epoch") is not None:  # chosen by train-split criteria, not by the loss
        best = next((h for h in history if h["epoch"] == selection["epoch"]), best)
    enc = config["encoder"]
    lines = [
        "---",
        "license: mit",
        "library_name: dimfeat",
        "pipeline_tag: feature-extraction",
        "tags:",
        "- materials-science",
        "- crystal-structures",
        "- deep-infomax",
        "- self-supervised",
        "- site-net",
        "- matminer",
        "datasets:",
        f"- {data.get('dataset_id', 'materials-project')}",
        "---",
        "",
        f"# {config['name']}",
        "",
        f"Site-Net encoder (one attention block, one head) producing a {enc['global_dim']}-d "
        "crystal vector, "
        + (
            "trained without labels by Deep InfoMax (Moran et al., Digital Discovery 2025)."
            if training
            else "**untrained** (random initialisation): the paper's untrained baseline."
        ),
        "Use it through `dimfeat.DeepInfoMaxFeaturizer(weights=...)`.",
        "",
        "## Training data",
        "",
    ]
    if training:
        lines += [
            f"- Data: {data.get('description', 'unknown')}",
            f"- Structures: {data.get('n_train', '?')} for training, "
            f"{data.get('n_valid', '?')} held out for model selection by the self-supervised "
            "loss (no labels were used).",
            f"- Source and credit: {data.get('credit', 'see dataset')}",
            "",
            "## Training",
            "",
            f"- Command: `{record.command or 'dimfeat train'}`",
            f"- Epochs run: {record.epochs_run or len(history)} (maximum "
            f"{(record.settings or {}).get('epochs')}); "
            + (
                f"selected epoch: {selection['epoch']} ({selection.get('criterion', '')})"
                if selection
                else f"best epoch: {best['epoch'] if best else 'n/a'}"
            ),
            f"- Hardware: {record.hardware or 'unknown'}; training time "
            f"{sum(h.get('seconds', 0) for h in history) / 60:.1f} min (sum of the epoch times"
            f"{', over resumed runs' if (record.resumed_runs or 1) > 1 else ''})",
            f"- Seed: {(record.settings or {}).get('seed')}",
            *([f"- Note: {record.note}"] if record.note else []),
            f"- Settings: `{record.settings}`",
            "",
        ]
        recipe = _recipe(config)
        if recipe:
            lines += ["## Recipe", "", *recipe, ""]
        if selection.get("curve"):
            lines += _curve_table(selection)
        if best:
            lines += [
                "Validation losses at the selected epoch (Jensen-Shannon DIM loss: 1.386 = chance;"
                " KL: 0 = prior):",
                "",
                "| local DIM | global DIM | local KL | global KL | total |",
                "|---|---|---|---|---|",
                "| "
                + " | ".join(
                    _fmt(best[f"valid_{k}"])
                    for k in ("local_dim", "global_dim", "local_kl", "global_kl", "loss")
                )
                + " |",
                "",
            ]
    else:
        lines += ["None: random weights seeded by `random_state`.", ""]
    inputs = config.get("inputs", {})
    lines += [
        "## Inputs",
        "",
        f"Canonical primitive cell, roughly cubic supercell of at most {inputs.get('max_atoms')} "
        f"atoms, symmetry tolerance {inputs.get('symprec')} Å; site features "
        f"{', '.join(config['normalisation']['features'])}, standardised with the stored "
        "per-element mean and standard deviation.",
        "",
        "## Intended use",
        "",
        "Fixed-length features of ordered, periodic inorganic crystals for small supervised "
        "models (linear models, small MLPs) trained on tens to thousands of labels.",
        "",
        "## Limitations",
        "",
        "- Trained on Materials Project crystals with at most 50 atoms in the primitive cell; "
        "other chemistries and larger cells are out of distribution.",
        "- Disordered (partially occupied) structures are rejected unless the featuriser is "
        "asked to order them.",
        "- Element data for Z > 103 is unavailable; missing properties of some elements are "
        "imputed (see the dimfeat documentation).",
        "- Vectors are invariant to site order, rotation, translation and the choice of cell "
        "up to float round-off (relative change below 1e-4).",
        "",
        "## Citation",
        "",
        _CITATION,
        "",
        f"Written by dimfeat {config.get('dimfeat_version')}; weights sha256 "
        f"`{config.get('sha256', '')}`."
        if config.get("sha256")
        else "",
        "",
    ]
    return "\n".join(lines)
