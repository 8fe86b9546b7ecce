"""Model cards for weights folders, written from ``config.json`` (never by hand)."""

from __future__ import annotations

from typing import Any

from dimfeat.record import TrainingRecord
from dimfeat.training_config import recipe_lines

__all__ = ["data_citations", "model_card", "two_channel_card"]

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


TWO_CHANNEL_ARCHITECTURE = "sitenet-dim-two-channel"  # dimfeat.channels, which imports this


def _training_records(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The training records of a weights ``config``: its own, or each channel's (two-channel)."""
    config = config or {}
    if config.get("architecture") == TWO_CHANNEL_ARCHITECTURE:
        channels = config.get("channels") or {}
        return [
            ((block or {}).get("source") or {}).get("training") or {} for block in channels.values()
        ]
    return [config.get("training") or {}]


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
        A weights folder's ``config.json`` (of either kind: a two-channel one credits the data
        of both channels' training); ``None`` or untrained weights give ``[]``.

    Returns
    -------
    list of str
        The Materials Project (Jain et al. 2013) when the data are credited to it, and CGCNN
        (Xie and Grossman 2018) when they came through its data set.
    """
    datas = [record.get("data") or {} for record in _training_records(config)]
    out = [MATERIALS_PROJECT_BIBTEX] if any(map(_names_materials_project, datas)) else []
    if any("cgcnn" in str(data.get("credit", "")).lower() for data in datas):
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
        "none (the encoder reads no distances: its vector is a function of the composition)"
        if enc.get("distance_input") == "none"
        else f"a basis of {enc.get('n_gaussians')} Gaussians on 0-{enc.get('distance_cutoff')} Å"
        if expansion == "gaussian"
        else "a single linear input (the paper's)"
    )
    # the objective's lines come from the declarations of TrainingConfig's fields
    return [f"- Distance input: {distance}.", *recipe_lines(settings)]


def _curve_table(selection: dict[str, Any], level: str = "##") -> list[str]:
    """The train-split probe and geometry scores of each scored epoch, as a Markdown table."""
    lines = [
        f"{level} Selection curve",
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


def _dataset_id(record: dict[str, Any]) -> str | None:
    data = record.get("data") or {}
    return data.get("dataset_id") or (
        "materials-project" if _names_materials_project(data) else None
    )


def _front_matter(dataset_ids: list[str], tags: tuple[str, ...] = ()) -> list[str]:
    """Hugging Face front matter: licence, library, pipeline, tags and data sets."""
    return [
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
        *(f"- {tag}" for tag in tags),
        *(["datasets:", *(f"- {d}" for d in dataset_ids)] if dataset_ids else []),
        "---",
        "",
    ]


def _training_sections(config: dict[str, Any], level: str = "##") -> list[str]:
    """What one encoder was trained on and how: the sections under "Training data".

    ``config`` is a single-channel config, or the ``{"encoder", "training"}`` of one channel of
    a two-channel folder; ``level`` is the Markdown heading of the sections (``"###"`` inside a
    channel's section). Untrained weights give a line saying so.
    """
    record = TrainingRecord.from_dict(config.get("training") or None)
    lines = [f"{level} Training data", ""]
    if record is None:
        return [*lines, "None: random weights seeded by `random_state`.", ""]
    history = record.history
    selection = record.selection or {}
    best = min(
        (h for h in history if "valid_loss" in h), key=lambda h: h["valid_loss"], default=None
    )
    if selection.get("epoch") is not None:  # chosen by train-split criteria, not by the loss
        best = next((h for h in history if h["epoch"] == selection["epoch"]), best)
    epochs_run = record.epochs_run or len(history)
    lines += [
        *_data_lines(record.data),
        "",
        f"{level} Training",
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
        *_readout_lines(record.readout),
        f"- Settings: `{record.settings}`",
        "",
    ]
    recipe = _recipe(config)
    if recipe:
        lines += [f"{level} Recipe", "", *recipe, ""]
    if selection.get("curve"):
        lines += _curve_table(selection, level)
    if best and all(f"valid_{k}" in best for k in _LOSS_COLUMNS):
        lines += [
            "Validation losses at the selected epoch (Jensen-Shannon DIM loss: 1.386 = chance;"
            " KL: 0 = prior):",
            "",
            "| local DIM | global DIM | local KL | global KL | total |",
            "|---|---|---|---|---|",
            "| " + " | ".join(_fmt(best[f"valid_{k}"]) for k in _LOSS_COLUMNS) + " |",
            "",
        ]
    return lines


def _readout_lines(readout: dict[str, Any] | None) -> list[str]:
    if not readout:
        return []
    return [
        f"- Read-out: after training, the vector was restricted to its {readout['rank']} "
        f"principal directions over {readout['n_structures']:,} unlabelled structures "
        f"({readout.get('data', 'not recorded')}), which hold "
        f"{readout['explained_variance']:.1%} of its variance"
    ]


_LOSS_COLUMNS = ("local_dim", "global_dim", "local_kl", "global_kl", "loss")


def _inputs_section(inputs: dict[str, Any], features: list[str]) -> list[str]:
    return [
        "## Inputs",
        "",
        f"Canonical primitive cell, roughly cubic supercell of at most {inputs.get('max_atoms')} "
        f"atoms, symmetry tolerance {inputs.get('symprec')} Å; site features "
        f"{', '.join(features)}, standardised with the stored "
        "per-element mean and standard deviation.",
        "",
        "## Intended use",
        "",
        "Fixed-length features of ordered, periodic inorganic crystals for small supervised "
        "models (linear models, small MLPs) trained on tens to thousands of labels.",
        "",
    ]


def _limitations(trained_on: list[str]) -> list[str]:
    return [
        "## Limitations",
        "",
        *trained_on,
        "- Disordered (partially occupied) structures are rejected unless the featuriser is "
        "asked to order them.",
        "- Element data for Z > 103 is unavailable; missing properties of some elements are "
        "imputed (see the dimfeat documentation).",
        "- Vectors are invariant to site order, rotation, translation and the choice of cell "
        "up to float round-off (relative change below 1e-4).",
        "",
    ]


def _citation_section(config: dict[str, Any]) -> list[str]:
    citations = data_citations(config)
    return [
        "## Citation",
        "",
        _CITATION,
        "",
        *(
            ["and for the training data:", "", "```bibtex", *citations, "```", ""]
            if citations
            else []
        ),
        f"Written by dimfeat {config.get('dimfeat_version')}; weights sha256 "
        f"`{config.get('sha256', '')}`."
        if config.get("sha256")
        else "",
        "",
    ]


def model_card(config: dict[str, Any]) -> str:
    """Markdown model card (Hugging Face front matter + sections) for a weights ``config``.

    A two-channel ``config`` (:mod:`dimfeat.channels`) gets :func:`two_channel_card`.
    """
    if config.get("architecture") == TWO_CHANNEL_ARCHITECTURE:
        return two_channel_card(config)
    record = config.get("training") or {}
    training = bool(record)
    data = record.get("data") or {}
    dataset_id = _dataset_id(record)
    enc = config["encoder"]
    lines = [
        *_front_matter([dataset_id] if dataset_id else []),
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
        *evaluation_section(config.get("evaluation")),
        *_training_sections(config),
        *_inputs_section(config.get("inputs", {}), config["normalisation"]["features"]),
        *_limitations([_trained_on(data, _names_materials_project(data))] if training else []),
        *_citation_section(config),
    ]
    return "\n".join(lines)


#: What each channel of a two-channel model is for, in its card.
_CHANNEL_PURPOSE = {
    "context": (
        'An encoder that reads no distances (`distance_input="none"`): its vector is a '
        "function of the composition alone, bit-identical for structures of equal composition "
        "(polymorphs share it). It carries what the elements and their proportions say."
    ),
    "structure": (
        "A Site-Net encoder that reads the interatomic distances of the supercell: its vector "
        "carries the geometry, and it is trained against false samples of the same composition "
        "(permutations, polymorphs, strained copies, where its recipe lists them) so that it "
        "separates structures that the context channel cannot."
    ),
}


def evaluation_section(evaluation: Any) -> list[str]:
    """The "Evaluation" section of a model card from a config's optional ``evaluation`` block:
    ``description`` (what was measured, on which data, by which script), ``header`` and
    ``rows`` of a table, and optional ``notes`` (one bullet each). Nothing when absent or not
    of that shape (the card never fails on it)."""
    if not isinstance(evaluation, dict):
        return []
    header, rows = evaluation.get("header"), evaluation.get("rows")
    if not isinstance(header, list) or not isinstance(rows, list):
        return []
    lines = ["## Evaluation", "", str(evaluation.get("description", "")), ""]
    lines += ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows if isinstance(row, list)]
    notes = evaluation.get("notes")
    if isinstance(notes, list) and notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return [*lines, ""]


def two_channel_card(config: dict[str, Any]) -> str:
    """Markdown model card of a two-channel weights ``config`` (:mod:`dimfeat.channels`).

    The same sections as :func:`model_card`, with one section per channel: what the channel is
    for, its source, and its training data, training, recipe and selection curve as the
    channel's recorded training gives them (the sections :func:`model_card` writes for one
    encoder), then the combined usage, inputs, limitations and citations.
    """
    channels = config["channels"]
    records = {
        name: (block["source"] or {}).get("training") or {} for name, block in channels.items()
    }
    widths = {name: block["encoder"].get("global_dim", 128) for name, block in channels.items()}
    dataset_ids = list(dict.fromkeys(d for r in records.values() if (d := _dataset_id(r))))
    name = config["name"]
    lines = [
        *_front_matter(dataset_ids, ("two-channel",)),
        f"# {name}",
        "",
        f"A two-channel Site-Net model producing a {sum(widths.values())}-d crystal vector: the "
        f"context channel's {widths['context']} values (`dim_ctx_*`, a function of the "
        f"composition alone) followed by the structure channel's {widths['structure']} values "
        "(`dim_struct_*`). Each channel is a Site-Net encoder (one attention block, one head) "
        "trained without labels by Deep InfoMax (Moran et al., Digital Discovery 2025) with its "
        "own recipe, and stopped at its own epoch.",
        "",
        "## Usage",
        "",
        "```python",
        "from dimfeat import DeepInfoMaxFeaturizer",
        "",
        f'both = DeepInfoMaxFeaturizer(weights="{name}")  # dim_ctx_* then dim_struct_*',
        f'context = DeepInfoMaxFeaturizer(weights="{name}", channel="context")',
        f'structure = DeepInfoMaxFeaturizer(weights="{name}", channel="structure")',
        "X = both.fit_transform(structures)",
        "```",
        "",
        "| channel | columns | source | source sha256 | epochs run | selected epoch |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for channel, block in channels.items():
        source = block["source"] or {}
        record = TrainingRecord.from_dict(records[channel] or None)
        run = (record.epochs_run or len(record.history)) if record else 0
        chosen = ((record.selection or {}).get("epoch") if record else None) or (
            max((h["epoch"] for h in record.history if h.get("best")), default=None)
            if record
            else None
        )
        lines.append(
            f"| {channel} | `{'dim_ctx' if channel == 'context' else 'dim_struct'}_0`-"
            f"`_{widths[channel] - 1}` | {source.get('name') or source.get('folder')} | "
            f"`{str(source.get('sha256'))[:16]}` | {run} | {chosen or 'n/a'} |"
        )
    lines.append("")
    lines += evaluation_section(config.get("evaluation"))
    trained_on = []
    for channel, block in channels.items():
        lines += [
            f"## {channel.capitalize()} channel",
            "",
            _CHANNEL_PURPOSE.get(channel, ""),
            "",
            *_training_sections(
                {"encoder": block["encoder"], "training": records[channel] or None}, "###"
            ),
        ]
        data = records[channel].get("data") or {}
        if records[channel]:
            trained_on.append(_trained_on(data, _names_materials_project(data)))
    features = channels["context"]["normalisation"].get("features") or []
    lines += [
        *_inputs_section(config.get("inputs", {}), features),
        *_limitations(list(dict.fromkeys(trained_on))),
        *_citation_section(config),
    ]
    return "\n".join(lines)
