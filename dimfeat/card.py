"""Model cards for weights folders, written from ``config.json`` (never by hand)."""

from __future__ import annotations

from typing import Any

from dimfeat.record import TrainingRecord
from dimfeat.training_config import recipe_lines

__all__ = ["data_citations", "model_card"]

#: BibTeX of the sources of training data that weights may record in their ``credit``.
MATERIALS_PROJECT_BIBTEX = (
    "@article{jain2013mp, title={Commentary: The Materials Project: A materials genome approach "
    "to accelerating materials innovation}, author={Jain, Anubhav and Ong, Shyue Ping and "
    "Hautier, Geoffroy and Chen, Wei and Richards, William Davidson and Dacek, Stephen and "
    "Cholia, Shreyas and Gunter, Dan and Skinner, David and Ceder, Gerbrand and Persson, "
    "Kristin A.}, journal={APL Materials}, volume={1}, number={1}, pages={011002}, year={2013}, "
    "doi={10.1063/1.4812323}}"
)
CGCNN_BIBTEX = (
    "@article{xie2018cgcnn, title={Crystal Graph Convolutional Neural Networks for an Accurate "
    "and Interpretable Prediction of Material Properties}, author={Xie, Tian and Grossman, "
    "Jeffrey C.}, journal={Physical Review Letters}, volume={120}, number={14}, "
    "pages={145301}, year={2018}, doi={10.1103/PhysRevLett.120.145301}}"
)

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


def _data(config: dict[str, Any] | None) -> dict[str, Any]:
    return ((config or {}).get("training") or {}).get("data") or {}


def _names_materials_project(data: dict[str, Any]) -> bool:
    text = " ".join(str(data.get(k, "")) for k in ("dataset_id", "credit")).lower()
    return "materials project" in text or "materials-project" in text


def data_citations(config: dict[str, Any] | None) -> list[str]:
    """BibTeX of the training data that a weights ``config`` credits (``training.data.credit``).

    Parameters
    ----------
    config : dict or None
        A weights folder's ``config.json``; ``None`` or untrained weights give ``[]``.

    Returns
    -------
    list of str
        The Materials Project (Jain et al. 2013) when the data are credited to it, and CGCNN
        (Xie and Grossman 2018) when they came through its data set.
    """
    data = _data(config)
    out = [MATERIALS_PROJECT_BIBTEX] if _names_materials_project(data) else []
    if "cgcnn" in str(data.get("credit", "")).lower():
        out.append(CGCNN_BIBTEX)
    return out


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _time_line(record: TrainingRecord, epochs_run: int, selected: int | None) -> str:
    """Hardware and training time: the sum of the times of every epoch run (over all runs)."""
    epochs = record.run_history or record.history
    timed = [h for h in epochs if "seconds" in h]
    total = sum(h["seconds"] for h in timed)
    if len(timed) >= epochs_run:
        what = f"the sum of the {len(timed)} epoch times"
    else:
        what = f"the sum of the times of the {len(timed)} epochs recorded of {epochs_run} run"
    if (record.resumed_runs or 1) > 1:
        what += f", over {record.resumed_runs} resumed runs"
    line = f"- Hardware: {record.hardware or 'unknown'}; training time {_duration(total)} ({what}"
    if record.wall_time_s:
        line += f"; wall time of the command {_duration(record.wall_time_s)}"
    line += ")"
    upto = [h for h in timed if selected is not None and h["epoch"] <= selected]
    if selected is not None and upto and selected < epochs_run:
        line += (
            f"; the selected epoch {selected} was reached after "
            f"{_duration(sum(h['seconds'] for h in upto))}"
        )
    return line


def _data_lines(data: dict[str, Any]) -> list[str]:
    """What was trained on: description, files (size, sha256), split, counts and credit."""
    lines = [f"- Data: {data.get('description', 'not recorded')}"]
    for file in data.get("files") or []:
        size = "a folder" if file.get("folder") else f"{file.get('bytes'):,} bytes"
        what = "sha256 of its files' names, sizes and sha256" if file.get("folder") else "sha256"
        lines.append(f"- File: `{file.get('name')}` ({size}; {what} `{file.get('sha256')}`)")
    split = data.get("split")
    if split:
        lines.append(
            f"- Split: '{split.get('part')}' part of `{split.get('name')}` "
            f"(sha256 `{split.get('sha256')}`)"
        )
    counts = (
        f"- Structures: {data.get('n_train', '?')} for training, {data.get('n_valid', '?')} held "
        "out for model selection by the self-supervised loss (no labels were used)"
    )
    if data.get("n_left_out_large") is not None:
        counts += (
            f"; {data['n_left_out_large']} with more than {data.get('max_primitive_sites')} "
            "atoms in the primitive cell left out"
        )
    lines.append(counts + ".")
    lines.append(f"- Source and credit: {data.get('credit', 'not recorded')}")
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _recipe(config: dict[str, Any]) -> list[str]:
    """Bullet lines naming the objective's choices (distance input, then the settings' phrases)."""
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
    # the objective's lines come from the declarations of TrainingConfig's fields
    return [f"- Distance input: {distance}.", *recipe_lines(settings)]


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


def _trained_on(data: dict[str, Any], mp: bool) -> str:
    """The limitation that the training data set: what it was, and the largest cells."""
    what = "Materials Project crystals" if mp else "the crystals named under Training data only"
    largest = data.get("max_primitive_sites")
    size = f" with at most {largest} atoms in the primitive cell" if largest else ""
    return (
        f"- Trained on {what}{size}; other chemistries"
        + (" and larger cells" if largest else "")
        + " are out of distribution."
    )


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
    mp = _names_materials_project(data)
    dataset_id = data.get("dataset_id") or ("materials-project" if mp else None)
    epochs_run = (record.epochs_run or len(history)) if record else 0
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
        *(["datasets:", f"- {dataset_id}"] if dataset_id else []),
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
            *_data_lines(data),
            "",
            "## Training",
            "",
            f"- Command: `{record.command or 'dimfeat train'}`",
            f"- Epochs run: {epochs_run} (maximum "
            f"{(record.settings or {}).get('epochs')}); "
            + (
                f"selected epoch: {selection['epoch']} ({selection.get('criterion', '')})"
                if selection
                else f"best epoch: {best['epoch'] if best else 'n/a'}"
            ),
            _time_line(record, epochs_run, selection.get("epoch")),
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
        *([_trained_on(data, mp)] if training else []),
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
        *(
            [
                "and for the training data:",
                "",
                "```bibtex",
                *data_citations(config),
                "```",
                "",
            ]
            if data_citations(config)
            else []
        ),
        f"Written by dimfeat {config.get('dimfeat_version')}; weights sha256 "
        f"`{config.get('sha256', '')}`."
        if config.get("sha256")
        else "",
        "",
    ]
    return "\n".join(lines)
