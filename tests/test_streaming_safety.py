"""Writers that must not harm an output: one writer at a time (a lock on the output, taken over
from a process that died), and starting again (``resume=False`` / ``--no-resume``) overwrites or
deletes only what a manifest written by dimfeat proves to be dimfeat's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import weights_labels

from dimfeat.cli import main
from dimfeat.streaming import featurize_to_file, read_features

ROOT = Path(__file__).resolve().parents[1]
ATOL = 2e-5  # float32; batch composition changes padding widths (docs/reliability.md)
LABELS = weights_labels()  # those of the default weights
QUIET = ["--n-jobs", "1", "--device", "cpu", "--quiet"]
N = 4


@pytest.fixture(scope="module")
def cifs(small_structures, tmp_path_factory):
    """A folder of 4 CIFs (ids s0..s3) and their structures."""
    folder = tmp_path_factory.mktemp("cifs")
    structures = small_structures[:N]
    for k, s in enumerate(structures):
        (folder / f"s{k}.cif").write_text(s.to(fmt="cif"))
    return folder, structures


@pytest.fixture(scope="module")
def expected(cifs, featurizer):
    return featurizer.transform(cifs[1])


def _lock(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


def _check(frame: pd.DataFrame, expected: np.ndarray) -> None:
    assert frame["id"].tolist() == [f"s{k}" for k in range(N)]
    np.testing.assert_allclose(frame[LABELS].to_numpy(), expected, atol=ATOL)


# --------------------------------------------------------------------------- one writer at a time

#: A second process: featurises the CIFs into a CSV, a folder of parts and (through the command
#: line) a .parquet file, pausing in each run until the test lets it go on: in the first two at
#: its first featurised chunk, in the third while it assembles OUT.parquet from OUT.parquet.parts.
_WRITER = """
import sys, time
from pathlib import Path
import dimfeat.streaming as streaming
from dimfeat.cli import main
from dimfeat.featurizer import DeepInfoMaxFeaturizer

gate, cifs, csv, parts, single = Path(sys.argv[1]), *sys.argv[2:]
state = {"phase": 0, "paused": set()}

def pause():
    phase = state["phase"]
    if phase in state["paused"]:
        return
    state["paused"].add(phase)
    (gate / f"started-{phase}").touch()
    deadline = time.monotonic() + 300
    while not (gate / f"go-{phase}").exists():
        if time.monotonic() > deadline:
            sys.exit(f"phase {phase}: never let go on")
        time.sleep(0.02)

real_featurize = DeepInfoMaxFeaturizer.featurize_many
def featurize_many(self, *args, **kwargs):
    pause()
    return real_featurize(self, *args, **kwargs)
DeepInfoMaxFeaturizer.featurize_many = featurize_many
featurizer = DeepInfoMaxFeaturizer(device="cpu")
streaming.featurize_to_file(cifs, csv, featurizer, chunk_size=2, progress=False)
state["phase"] = 1
streaming.featurize_to_file(cifs, parts, featurizer, chunk_size=2, progress=False)
state["phase"] = 2
DeepInfoMaxFeaturizer.featurize_many = real_featurize
real_read = streaming.read_features
def read_features(*args, **kwargs):
    pause()
    return real_read(*args, **kwargs)
streaming.read_features = read_features
main(["featurize", cifs, "-o", single, "--chunk-size", "2",
      "--n-jobs", "1", "--device", "cpu", "--quiet"])
"""


def _wait_for(flag: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the first writer ended early: {proc.stderr.read()}")
        assert time.monotonic() < deadline, f"the first writer never reached {flag.name}"
        time.sleep(0.02)


def test_a_second_writer_is_refused_while_the_first_holds_the_output(
    cifs, expected, featurizer, tmp_path, capsys
):
    """Two processes writing one output corrupted a CSV (duplicate rows, a header mid-file) and
    both reported success; now the second is refused, naming the first's pid and the lock file,
    for a CSV, a folder of parts and the command line's single-file output (locked also while it
    is assembled, after its parts are done), and the first finishes unharmed."""
    folder, _ = cifs
    gate = tmp_path / "gate"
    gate.mkdir()
    csv, parts, single = tmp_path / "v.csv", tmp_path / "parts", tmp_path / "v.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(gate), str(folder), str(csv), str(parts), str(single)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for phase, output in enumerate([csv, parts]):
            _wait_for(gate / f"started-{phase}", proc)
            assert json.loads(_lock(output).read_text())["pid"] == proc.pid
            refused = rf"being written by process {proc.pid} on .*lock file .*{_lock(output).name}"
            for resume in (True, False):
                with pytest.raises(ValueError, match=refused):
                    featurize_to_file(folder, output, featurizer, chunk_size=2, resume=resume,
                                      progress=False)  # fmt: skip
            (gate / f"go-{phase}").touch()
        _wait_for(gate / "started-2", proc)  # OUT.parquet.parts is finished and unlocked
        assert not _lock(tmp_path / "v.parquet.parts").exists() and _lock(single).exists()
        line = _fails(capsys, ["featurize", str(folder), "-o", str(single), "--chunk-size", "2",
                               *QUIET])  # fmt: skip
        assert f"being written by process {proc.pid}" in line and str(_lock(single)) in line
        (gate / "go-2").touch()
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    finally:
        for phase in range(3):
            (gate / f"go-{phase}").touch()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    _check(read_features(csv), expected)
    _check(read_features(parts), expected)
    _check(pd.read_parquet(single), expected)
    assert csv.read_text().count("index,id,") == 1
    assert not any(p.name.endswith(".lock") for p in tmp_path.rglob("*"))


def _fails(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dimfeat: error: "), lines
    return lines[0]


def _dead_pid() -> int:
    """The pid of a process of this host that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_left_by_a_dead_process_is_taken_over(cifs, expected, featurizer, tmp_path):
    """A lock file whose process died (killed: it could not remove it) does not block: the next
    run takes it over with a warning naming that process, and removes it when done."""
    folder, _ = cifs
    pid = _dead_pid()
    for output in (tmp_path / "v.csv", tmp_path / "parts"):
        stale = {"dimfeat_lock": 1, "pid": pid, "host": socket.gethostname()}
        _lock(output).write_text(json.dumps(stale))
        with pytest.warns(UserWarning, match=rf"left by process {pid} .*taken over"):
            featurize_to_file(folder, output, featurizer, chunk_size=2, progress=False)
        _check(read_features(output), expected)
        assert not _lock(output).exists()
    # a file of the user's in the lock's place is refused and left as it was
    output = tmp_path / "w.csv"
    _lock(output).write_text("my notes")
    with pytest.raises(ValueError, match=r"w\.csv\.lock exists and was not written by dimfeat"):
        featurize_to_file(folder, output, featurizer, chunk_size=2, progress=False)
    assert _lock(output).read_text() == "my notes" and not output.exists()


class _Interrupts:
    """Wraps a featuriser: checks that the output is locked by this process, then raises."""

    def __init__(self, featurizer, lock: Path, error: BaseException):
        self.featurizer, self.lock, self.error = featurizer, lock, error

    def __getattr__(self, name):
        return getattr(self.featurizer, name)

    def featurize_many(self, *args, **kwargs):
        assert json.loads(self.lock.read_text())["pid"] == os.getpid()
        raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ValueError("structure 0 (id s0): bad")])
def test_the_lock_is_held_during_a_run_and_removed_when_it_fails(
    cifs, expected, featurizer, tmp_path, error
):
    folder, _ = cifs
    for output in (tmp_path / "v.csv", tmp_path / "parts"):
        with pytest.raises(type(error)):
            featurize_to_file(folder, output, _Interrupts(featurizer, _lock(output), error),
                              chunk_size=2, progress=False)  # fmt: skip
        assert not _lock(output).exists()
        featurize_to_file(folder, output, featurizer, chunk_size=2, progress=False)
        _check(read_features(output), expected)
    # never inside a parquet folder, where readers would take it for data
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "manifest.json", "part-00000.parquet", "part-00001.parquet"
    ]  # fmt: skip


# --------------------------------------------------------------------------- starting again


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("text", ["not json at all", '{"title": "my dataset", "rows": 3}'])
def test_a_manifest_dimfeat_did_not_write_is_never_overwritten(
    cifs, featurizer, tmp_path, text, resume
):
    """``resume=False`` overwrote a foreign ``manifest.json`` in the output folder, and deleted
    a user's CSV that had a garbage ``.manifest.json`` beside it; now both are refused (with or
    without resume) and left as they were."""
    folder, _ = cifs
    out = tmp_path / "parts"
    out.mkdir()
    (out / "manifest.json").write_text(text)
    said = r"manifest\.json is not a dimfeat manifest .*dimfeat did not write it"
    with pytest.raises(ValueError, match=said):
        featurize_to_file(folder, out, featurizer, chunk_size=2, resume=resume, progress=False)
    assert (out / "manifest.json").read_text() == text
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
    csv = tmp_path / "mine.csv"
    csv.write_text("a,b\n1,2\n")
    (tmp_path / "mine.csv.manifest.json").write_text(text)
    with pytest.raises(ValueError, match=said + r".*delete the CSV beside it"):
        featurize_to_file(folder, csv, featurizer, chunk_size=2, resume=resume, progress=False)
    assert csv.read_text() == "a,b\n1,2\n"
    assert (tmp_path / "mine.csv.manifest.json").read_text() == text


def test_starting_again_deletes_a_csv_only_if_the_dimfeat_manifest_describes_it(
    cifs, expected, featurizer, tmp_path
):
    folder, structures = cifs
    csv = tmp_path / "v.csv"
    manifest = tmp_path / "v.csv.manifest.json"
    featurize_to_file(folder, csv, featurizer, chunk_size=2, progress=False)
    # the user put a file of their own in its place: dimfeat's manifest does not describe it
    for mine in ["a,b\n1,2\n", "index,id,dim_0\n" + "0,x,1.0\n" * 300]:
        csv.write_text(mine)
        with pytest.raises(ValueError, match=r"v\.csv is not the CSV that v\.csv\.manifest"):
            featurize_to_file(folder, csv, featurizer, chunk_size=2, resume=False,
                              progress=False)  # fmt: skip
        assert csv.read_text() == mine
    # a manifest of a run that ended in its first chunk: only a CSV begun as dimfeat's goes
    recorded = json.loads(manifest.read_text())
    recorded["chunks"] = {}
    manifest.write_text(json.dumps(recorded))
    csv.write_text("a,b\n1,2\n")
    for resume in (True, False):
        with pytest.raises(ValueError, match=r"does not begin with 'index,id,'"):
            featurize_to_file(folder, csv, featurizer, chunk_size=2, resume=resume,
                              progress=False)  # fmt: skip
        assert csv.read_text() == "a,b\n1,2\n"
    csv.write_text("index,id,dim_0,dim_1,dim")  # what dimfeat had begun to write
    featurize_to_file(folder, csv, featurizer, chunk_size=2, resume=False, progress=False)
    _check(read_features(csv), expected)
    # its own CSV, with an interrupted chunk after the finished ones, is replaced
    with csv.open("a") as fh:
        fh.write("4,s4,0.1,0.2")
    featurize_to_file(folder, csv, featurizer, chunk_size=3, resume=False, progress=False)
    _check(read_features(csv), expected)
    assert len(csv.read_text().splitlines()) == len(structures) + 1


def test_the_command_line_never_overwrites_a_table_or_temporary_file_of_the_user(
    cifs, expected, tmp_path, capsys
):
    """``-o v.npy`` overwrote a ``v.ids.csv`` of the user's, and the assembly of a single file
    went through ``OUT.tmp``, replacing (then moving away) a file of that name."""
    folder, _ = cifs
    out = tmp_path / "v.npy"
    ids = tmp_path / "v.ids.csv"
    ids.write_text("name,value\nx,1\n")
    line = _fails(capsys, ["featurize", str(folder), "-o", str(out), *QUIET])
    assert "v.ids.csv exists and was not written by dimfeat" in line
    assert ids.read_text() == "name,value\nx,1\n" and not out.exists()
    # a .npy of the user's beside a table that looks like dimfeat's but does not match it
    np.save(out, np.zeros((7, 3), dtype=np.float32))
    ids.write_text("index,id,error\n0,a,\n")
    line = _fails(capsys, ["featurize", str(folder), "-o", str(out), *QUIET])
    assert "v.npy exists and was not written by dimfeat" in line
    assert np.load(out).shape == (7, 3)
    out.unlink()
    ids.unlink()
    for name in ("v.npy.tmp", "w.parquet.tmp"):
        (tmp_path / name).write_text("mine")
    for output in (out, tmp_path / "w.parquet"):
        main(["featurize", str(folder), "-o", str(output), "--chunk-size", "2", *QUIET])
        # its own output is replaced
        main(["featurize", str(folder), "-o", str(output), "--chunk-size", "3", "--no-resume",
              *QUIET])  # fmt: skip
    np.testing.assert_allclose(np.load(out), expected, atol=ATOL)
    _check(pd.read_parquet(tmp_path / "w.parquet"), expected)
    assert (tmp_path / "v.npy.tmp").read_text() == "mine"
    assert (tmp_path / "w.parquet.tmp").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "v.ids.csv", "v.npy", "v.npy.tmp", "w.parquet", "w.parquet.tmp"
    ]  # fmt: skip
