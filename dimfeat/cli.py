"""Command line: ``dimfeat featurize`` and ``dimfeat train``.

``dimfeat featurize INPUT... -o OUT`` reads structures from folders, tarballs, structure files or
a Matbench task and writes one vector per structure; every input kind and output format goes
through :func:`dimfeat.streaming.featurize_to` (see ``FEATURIZE_DESCRIPTION``).

``dimfeat train`` reads structures from a CGCNN-layout folder or tarball, a Matbench task or a
file of structures, builds model inputs (optionally cached in an ``.npz`` file, which is all a
GPU machine then needs), trains the encoder with Deep InfoMax and writes a weights folder
(``model.safetensors``, ``config.json``, model card) that ``DeepInfoMaxFeaturizer(weights=...)``
loads: :func:`dimfeat.training_run.train_weights`.

The command only parses arguments and calls those library functions; the training flags are
generated from :class:`~dimfeat.training.TrainingConfig` (:mod:`dimfeat.training_config`).
Warnings of a command are printed as one plain line each, ``dimfeat: warning: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dimfeat.training import TrainingConfig

__all__ = ["build_parser", "main"]


_TRAIN_DESCRIPTION = """Train a Site-Net encoder with Deep InfoMax on unlabelled structures
(INPUT...: what dimfeat featurize reads, a CGCNN folder or tarball, a folder or tarball of
CIF/POSCAR files, a .json/.json.gz file of structures or CIF/POSCAR files; or --matbench TASK)
and write a weights folder OUT (model.safetensors, config.json, model card) that
``DeepInfoMaxFeaturizer(weights=...)`` and ``dimfeat featurize --weights`` load."""


def _train_inputs(args) -> None:
    """``dimfeat train INPUT... -o OUT``, accepting the older ``dimfeat train OUT --data DATA``.

    Sets ``args.inputs`` (the sources) and ``args.output``.
    """
    _check_options_after_double_dash(args)
    inputs = list(args.inputs)
    data = list(args.data or [])
    if args.matbench and data and args.data_home is None:
        args.data_home = data.pop(0)  # the older --matbench TASK --data HOME
    if args.output is None:
        if len(inputs) == 1 and (data or args.matbench):
            args.output = inputs.pop(0)  # the older form: OUT --data DATA
        else:
            raise SystemExit(
                "give the structures to train on and the weights folder to write: "
                "dimfeat train INPUT... -o OUT"
            )
    args.inputs = inputs + data


def _train(args) -> None:
    """Single process, or one rank of ``torchrun --nproc_per_node=N dimfeat train ...``."""
    from dimfeat import distributed

    _train_inputs(args)
    if not distributed.launched_by_torchrun():
        _train_process(args, None)
        return
    device = distributed.init_from_env(args.device)
    try:
        _train_process(args, device)
    finally:
        import torch.distributed

        torch.distributed.destroy_process_group()


def _command_line(args: argparse.Namespace) -> str:
    """The ``dimfeat`` command line that was parsed into ``args`` (shell-quoted)."""
    return "dimfeat " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))


def _training_config(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`~dimfeat.training.TrainingConfig` of parsed ``dimfeat train`` arguments."""
    from dimfeat.training_config import config_from_args

    return config_from_args(args)


def _train_process(args, ddp_device) -> None:
    from dimfeat.encoder import EncoderConfig
    from dimfeat.training_run import train_weights

    # settings first: a bad one is refused before any structure is read
    config = _training_config(args)
    if args.weights and args.postpool_hidden is not None:
        raise SystemExit(
            "--postpool-hidden sets the architecture of a random encoder; --weights brings its "
            "own: give one or the other"
        )
    encoder_config = EncoderConfig(
        distance_expansion=args.distance_expansion,
        distance_input=args.distance_input,
        postpool_hidden=tuple(args.postpool_hidden or EncoderConfig.postpool_hidden),
    )
    train_weights(
        args.inputs,
        args.output,
        config,
        matbench=args.matbench,
        data_home=args.data_home,
        split=args.split,
        part=args.part,
        cache=args.cache,
        max_atoms=args.max_atoms,
        symprec=args.symprec,
        max_primitive_sites=args.max_primitive_sites,
        n_jobs=args.n_jobs,
        weights=args.weights,
        encoder_config=encoder_config,
        global_dim=args.global_dim,
        device=ddp_device if ddp_device is not None else args.device,
        checkpoint_dir=args.checkpoint_dir,
        save_every_epoch=args.save_every_epoch,
        name=args.name,
        progress=not args.quiet,
        command=_command_line(args),
    )


#: The environment variable that makes ``dimfeat`` show Python tracebacks (as ``--debug``).
DEBUG_ENV = "DIMFEAT_DEBUG"


def _plain(text: str) -> str:
    """Help text without reStructuredText markup: double backquotes and roles (:func: etc.)."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _featurize_inputs(args) -> tuple[list[str], str]:
    """The INPUTs and the output of ``dimfeat featurize``, accepting the older form.

    ``dimfeat featurize OUTPUT --data INPUT`` (before INPUT... -o OUTPUT) still works, with a
    note on stderr.
    """
    _check_options_after_double_dash(args)
    inputs = list(args.inputs)
    data = list(args.data or [])
    if args.matbench and data and args.data_home is None:
        args.data_home = data.pop(0)  # the older --matbench TASK --data HOME
    output = args.output
    if output is None:
        if (data or args.matbench) and len(inputs) == 1:
            output = inputs.pop(0)
            print(
                "dimfeat: note: 'dimfeat featurize OUTPUT --data INPUT' is deprecated; write "
                "'dimfeat featurize INPUT -o OUTPUT'",
                file=sys.stderr,
            )
        elif len(inputs) >= 2 and not Path(inputs[-1]).exists():
            raise SystemExit(
                "give the output with -o OUT: dimfeat featurize "
                f"{' '.join(inputs[:-1])} -o {inputs[-1]}"
            )
        else:
            raise SystemExit("give the output file or folder with -o OUT")
    return inputs + data, output


def _check_options_after_double_dash(args) -> None:
    """Refuse options of ``dimfeat featurize``/``train`` written after ``--``, with the command
    that works.

    ``--`` ends the options (the standard meaning, kept: it lets an input's name start with
    ``-``), so in ``dimfeat featurize -- x.cif -o out.csv`` the ``-o`` and ``out.csv`` are input
    names. A word after ``--`` that is an option of ``featurize`` and no existing file is taken
    as a misplaced option.
    """
    argv = list(getattr(args, "argv", None) or [])
    if "--" not in argv:
        return
    split = argv.index("--")
    before, after = argv[:split], argv[split + 1 :]
    known = _subparser(args.command)._option_string_actions
    options, operands, k = [], [], 0
    while k < len(after):
        token = after[k]
        action = known.get(token.split("=", 1)[0]) if token.startswith("-") else None
        if token == "--":  # a second marker: one is enough
            k += 1
            continue
        if action is None or Path(token).exists():
            operands.append(token)
            k += 1
            continue
        width = 1 if action.nargs == 0 or "=" in token else 2
        options += after[k : k + width]
        k += width
    if not options:
        return
    marker = ["--"] if any(o.startswith("-") for o in operands) else []
    command = shlex.join(["dimfeat", *before, *options, *marker, *operands])
    misplaced = [repr(o) for o in options if o.startswith("-")]
    if len(misplaced) == 1:
        what = f"{misplaced[0]} comes after '--', which ends the options, so it would be read as an"
        what += " input name"
    else:
        what = f"{', '.join(misplaced[:-1])} and {misplaced[-1]} come after '--', which ends the "
        what += "options, so they would be read as input names"
    raise SystemExit(f"{what}; put the options before '--': {command}")


def _subparser(name: str) -> argparse.ArgumentParser:
    """The parser of the subcommand ``name`` (``featurize``, ``train``)."""
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)  # pragma: no cover - the parser always has subcommands


def _featurize(args) -> None:
    """``dimfeat featurize``: every input kind and format goes through one streaming writer."""
    from dimfeat.chunks import select_source
    from dimfeat.featurizer import DeepInfoMaxFeaturizer
    from dimfeat.inputs import InvalidStructureError
    from dimfeat.streaming import featurize_to, output_format

    inputs, output = _featurize_inputs(args)
    fmt = output_format(output, args.format)
    try:
        source = select_source(
            inputs,
            matbench=args.matbench,
            data_home=args.data_home,
            split=args.split,
            part=args.part,
        )
    except (FileNotFoundError, ValueError) as exc:  # which INPUTs: a usage error
        raise SystemExit(str(exc)) from None
    featurizer = DeepInfoMaxFeaturizer(
        weights=args.weights, device=args.device, n_jobs=args.n_jobs, disorder=args.disorder
    )
    try:
        summary = featurize_to(
            source,
            output,
            featurizer,
            format=fmt,
            chunk_size=args.chunk_size,
            resume=args.resume,
            progress=not args.quiet,
            ignore_errors=args.ignore_errors,
            limit=args.limit,
        )
    except ValueError as exc:
        if isinstance(exc, InvalidStructureError) or _A_STRUCTURE_FAILED.match(str(exc)):
            raise SystemExit(
                f"{exc} (--ignore-errors writes a row of NaN with the error text instead)"
            ) from exc
        raise
    print(
        f"wrote {summary.n_rows} vectors to {output} ({summary.n_chunks} chunks, "
        f"{summary.n_skipped_chunks} already done, {summary.n_errors} errors)"
    )


#: How ``featurize_to_file`` names a structure that failed (not a refused resume).
_A_STRUCTURE_FAILED = re.compile(r"(structure \d+ \(id |chunk \d+, whose structure 0)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


FEATURIZE_DESCRIPTION = """\
Featurise crystal structures: one vector per structure, written as parquet, CSV or .npy.

INPUT is one of
  - a folder of structure files (*.cif, POSCAR*, CONTCAR*, *.vasp, *.poscar), or a CGCNN
    folder (id_prop.csv, material_id_hash.csv and {idx}.cif);
  - a .tar.gz, .tgz or .tar of a CGCNN folder or of *.cif files, read as a stream;
  - a .json or .json.gz file of structures: a list of Structure.as_dict() dictionaries, an
    object of id -> dictionary, or a matminer/Matbench dataset file;
  - one or more CIF/POSCAR files;
or --matbench TASK instead of INPUT.
"""

FEATURIZE_EPILOG = """\
output (-o OUT; the format follows the extension, or --format):
  OUT.parquet  one parquet file          OUT.csv  one CSV file
  OUT.npy      float32 array of vectors, with OUT.ids.csv (index, id, error) beside it
  OUT          (no extension) a folder of parquet parts, one per chunk, with manifest.json
Every row is: index (position in the input), id (material id, file name without extension,
Matbench id such as mb-phonons-0001, or the key or position in a .json file),
the vector (the bundled two-channel weights: dim_ctx_0 ... dim_ctx_63, dim_struct_0 ...
dim_struct_63; single-channel weights: dim_0 ... dim_127), error (empty, or why the
structure failed, with --ignore-errors).

An interrupted run resumes when started again with the same command (--no-resume starts over).
Exit status: 0 done; 2 an error, printed as one line 'dimfeat: error: ...' (--debug or
DIMFEAT_DEBUG=1 shows the Python traceback); 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``dimfeat`` command line, for tools that check what a command would
    do before running it (e.g. the settings ``dimfeat train ARGS`` would train with:
    ``config_from_args(build_parser().parse_args(["train", *ARGS]))`` with
    :func:`dimfeat.training_config.config_from_args`)."""
    return _parser()


def _parser() -> argparse.ArgumentParser:
    from dimfeat._version import __version__
    from dimfeat.encoder import DISTANCE_EXPANSIONS, DISTANCE_INPUTS, EncoderConfig
    from dimfeat.streaming import FORMATS
    from dimfeat.training_config import add_training_flags
    from dimfeat.weights import InputSettings

    parser = argparse.ArgumentParser(
        prog="dimfeat",
        description="Learned crystal feature vectors: featurise structures, or train the "
        "encoder that makes them.",
        epilog=f"Tracebacks: --debug after the command, or {DEBUG_ENV}=1.",
    )
    parser.add_argument("--version", action="version", version=f"dimfeat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{featurize,train}")

    def source_options(p, inputs_help: str, output_help: str) -> None:
        """INPUT..., -o OUT and the options that choose the structures (one reader for both)."""
        p.add_argument("inputs", nargs="*", metavar="INPUT", help=inputs_help)
        p.add_argument("-o", "--output", metavar="OUT", help=output_help)
        p.add_argument(
            "--data",
            action="append",
            metavar="INPUT",
            help="the older form: the same as an INPUT (with --matbench: the same as --data-home)",
        )
        p.add_argument("--split", help="split.json restricting a CGCNN/.json INPUT to one part")
        p.add_argument("--part", default="train", help="part of --split to use (default train)")
        p.add_argument(
            "--matbench",
            metavar="TASK",
            help="a Matbench task instead of INPUT, e.g. matbench_phonons",
        )
        p.add_argument(
            "--data-home",
            metavar="DIR",
            help="folder holding TASK.json.gz (default: $MATMINER_DATA, else matminer's own "
            "datasets folder; nothing is downloaded)",
        )

    def debug_option(p):
        p.add_argument(
            "--debug", action="store_true", help=f"show Python tracebacks (or set {DEBUG_ENV}=1)"
        )

    train = sub.add_parser(
        "train",
        help="train a DIM encoder and write a weights folder",
        description=_plain(_TRAIN_DESCRIPTION),
        usage="dimfeat train INPUT... -o OUT [options]",
    )
    data = train.add_argument_group("data: the structures trained on and their model inputs")
    source_options(
        data,
        "structures to train on, in any form dimfeat featurize reads",
        "weights folder to write",
    )
    data.add_argument(
        "--cache",
        help=".npz of model inputs: read if present (refused if built from other data, "
        "--max-atoms or --symprec), else written",
    )
    data.add_argument(
        "--max-atoms",
        type=int,
        default=InputSettings().max_atoms,
        help="supercell size limit (default: %(default)s)",
    )
    data.add_argument(
        "--symprec",
        type=float,
        default=InputSettings().symprec,
        help="tolerance (angstrom) of the primitive-cell search (default: %(default)s)",
    )
    data.add_argument(
        "--max-primitive-sites",
        type=int,
        default=50,
        help="leave out crystals with more atoms in the primitive cell (default: %(default)s)",
    )
    data.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="processes for input building (default: -1, all cores)",
    )

    recipe = train.add_argument_group("recipe: the encoder and the Deep InfoMax objective")
    recipe.add_argument("--weights", help="start from these weights (default: random)")
    recipe.add_argument(
        "--global-dim",
        type=int,
        default=128,
        help="width of the crystal vector of a random encoder (default: %(default)s)",
    )
    recipe.add_argument(
        "--postpool-hidden",
        type=int,
        nargs="+",
        metavar="WIDTH",
        help="layers of the post-pooling MLP of a random encoder (default: "
        f"{' '.join(map(str, EncoderConfig.postpool_hidden))}; the crystal vector's rank is at "
        "most the last)",
    )
    recipe.add_argument(
        "--distance-expansion",
        choices=list(DISTANCE_EXPANSIONS),
        default="gaussian",
        help="distance input of a random encoder: Gaussian basis or the paper's linear input",
    )
    recipe.add_argument(
        "--distance-input",
        choices=list(DISTANCE_INPUTS),
        default="distances",
        help="'none': a context encoder that sees no distances, whose vector is a function of "
        "the composition alone (the context channel of a two-channel model; default: "
        "%(default)s)",
    )
    optimisation = train.add_argument_group("optimisation: epochs, rates, stopping, device")
    optimisation.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ..."
    )
    # every TrainingConfig setting with a flag, in its group, from its one declaration
    add_training_flags({"recipe": recipe, "optimisation": optimisation})

    output = train.add_argument_group("output: the weights folder, checkpoints and messages")
    output.add_argument("--name", help="name in the model card (default: folder name)")
    output.add_argument("--checkpoint-dir", help="per-epoch checkpoints; resume from them")
    output.add_argument(
        "--save-every-epoch",
        metavar="DIR",
        help="also write each epoch's encoder as a weights folder DIR/epoch-NNN",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bars")
    debug_option(output)
    train.set_defaults(func=_train)

    feat = sub.add_parser(
        "featurize",
        help="structures in, vectors out (parquet, CSV or .npy)",
        description=FEATURIZE_DESCRIPTION,
        epilog=FEATURIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="dimfeat featurize INPUT... -o OUT [--format {parquet,csv,npy,parts}] [options]",
    )
    source_options(feat, "structures to featurise (see above)", "output file or folder (see below)")
    feat.add_argument(
        "--format",
        choices=list(FORMATS),
        help="output format (default: from the extension of OUT; none: parts)",
    )
    feat.add_argument("--weights", default=None, help="weights (default: bundled)")
    feat.add_argument(
        "--ignore-errors",
        action="store_true",
        help="a row of NaN with the error text for a structure that fails, instead of stopping",
    )
    feat.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="structures read, featurised and written at a time (default 1000); memory stays "
        "flat however large the input",
    )
    feat.add_argument(
        "--limit", type=_positive_int, metavar="N", help="featurise only the first N structures"
    )
    feat.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted run, skipping the chunks it finished (default: on)",
    )
    feat.add_argument(
        "--disorder",
        choices=["error", "majority"],
        default="error",
        help="partial occupancies: fail, or keep each site's majority species",
    )
    feat.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="processes that build, and on the CPU encode, chunks (default: all cores)",
    )
    feat.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    feat.add_argument("--quiet", action="store_true", help="no progress bar")
    debug_option(feat)
    feat.set_defaults(func=_featurize)

    combine = sub.add_parser(
        "combine-channels",
        help="one two-channel weights folder from a context and a structure weights folder",
        description="Write a two-channel weights folder whose vector is the CONTEXT weights' "
        "vector followed by the STRUCTURE weights' vector (feature labels dim_ctx_*, "
        "dim_struct_*); both are verified, and recorded as the sources in the model card.",
    )
    combine.add_argument("context", help="weights folder of the context channel")
    combine.add_argument("structure", help="weights folder of the structure channel")
    combine.add_argument("-o", "--output", required=True, help="the two-channel folder to write")
    combine.add_argument("--name", help="name in the model card (default: the folder name)")
    debug_option(combine)
    combine.set_defaults(func=_combine)
    return parser


def _combine(args: argparse.Namespace) -> None:
    from dimfeat.channels import combine_channels

    folder = combine_channels(args.context, args.structure, args.output, name=args.name)
    print(f"wrote {folder}")


#: ``name=value (command line: --flag ...)`` in a library message: the command line shows the flag.
_PYTHON_AND_FLAG = re.compile(r"\b\w+=\S+ \(command line: ([^)]+)\)")


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, naming command-line flags rather than Python
    arguments (a ``KeyError`` without its quotes)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = _PYTHON_AND_FLAG.sub(r"\1", str(text))
    return " ".join(text.split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``dimfeat`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``dimfeat`` (default: ``sys.argv[1:]``).

    Raises
    ------
    SystemExit
        Code 0 after ``--help``/``--version``; code 2 for a usage error or any error of the
        run, printed on stderr as one line ``dimfeat: error: ...`` (with ``--debug`` or
        ``DIMFEAT_DEBUG=1`` the exception propagates with its traceback instead); code 130
        when interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv  # recorded as the training command
    if args.command == "featurize" and args.weights is None:
        from dimfeat.weights import DEFAULT_WEIGHTS

        args.weights = DEFAULT_WEIGHTS
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in {"", "0"}
    try:
        with _plain_warnings():
            args.func(args)
    except SystemExit as exc:
        if debug or not isinstance(exc.code, str):
            raise
        _fail(_one_line(exc))
    except (ValueError, TypeError, KeyError, OSError, ImportError) as exc:
        if debug:
            raise
        _fail(_one_line(exc))
    except KeyboardInterrupt:
        if debug:
            raise
        print("dimfeat: interrupted (run the same command again to resume)", file=sys.stderr)
        raise SystemExit(130) from None


@contextlib.contextmanager
def _plain_warnings() -> Iterator[None]:
    """Print each distinct ``UserWarning`` of a command once, as one plain line on stderr
    (``dimfeat: warning: ...``), not as a Python warning with its source line.

    Warning filters the user set (``-W``, ``PYTHONWARNINGS``) are kept; other categories are
    shown as Python shows them.
    """
    seen: set[str] = set()
    show_python = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not issubclass(category, UserWarning):
            show_python(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"dimfeat: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        if not sys.warnoptions:  # each distinct text once, however often it is raised
            warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        yield


def _fail(message: str) -> None:
    print(f"dimfeat: error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
