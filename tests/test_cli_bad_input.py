"""Bad invocations of every evovae command: exit status 2, exactly one line on stderr that says what is wrong
(naming the option), no traceback, and not one new file anywhere under the test's directory (the working
directory is a fresh one per case). Table-driven, run in-process through each command's main(argv); a
representative few also as real processes. Then a resumed search: what it ignores, what it replayed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = sys.executable
TOML_BAD_LR = "[search]\nlr = nan\n"
TOML_BAD_ID = '[worker]\nworker-id = "a b"\n'
TOML_RESUMED = "[search]\nseed = 7\npopulation = 3\n"

#: (id, argv, a piece of the one line). In argv: {missing} a path that does not exist, {file} a plain file,
#: {empty} an empty directory, {used} a directory holding a file, {toml_*} settings files, {binary} no text.
CASES = [
    # evovae train
    ("train-20-digit-width", ["train", "9" * 20 + "|20|100"], "is too large: width 99999999999999999999"),
    ("train-21-layers", ["train", ",".join(["100"] * 21) + "|10|100"], "the encoder has 21 hidden layers"),
    ("train-genotype-with-dash", ["train", "-1|20|100"], "bad genotype '-1|20|100': the encoder has '-1'"),
    ("train-malformed-genotype", ["train", "850|20"], "expected three '|'-separated parts"),
    ("train-no-genotype", ["train"], "required: genotype"),
    ("train-negative-seed", ["train", "100|20|100", "--seed", "-1"], "argument --seed: expected a seed"),
    ("train-huge-seed", ["train", "100|20|100", "--seed", "1" + "0" * 20], "argument --seed"),
    ("train-zero-epochs", ["train", "100|20|100", "--epochs", "0"], "argument --epochs: expected a whole number"),
    ("train-fractional-batch", ["train", "100|20|100", "--batch-size", "1.5"], "argument --batch-size"),
    ("train-nan-lr", ["train", "100|20|100", "--lr", "nan"], "argument --lr: expected a finite number > 0"),
    ("train-inf-lr", ["train", "100|20|100", "--lr", "inf"], "argument --lr"),
    ("train-zero-val-size", ["train", "100|20|100", "--val-size", "0"], "argument --val-size"),
    ("train-negative-threads", ["train", "100|20|100", "--threads", "-1"], "argument --threads"),
    ("train-unknown-device", ["train", "100|20|100", "--device", "gpu"], "argument --device: expected a torch"),
    ("train-missing-data-root", ["train", "100|20|100", "--data-root", "{missing}"],
     "argument --data-root: no such directory"),
    ("train-data-root-with-download", ["train", "100|20|100", "--data-root", "{missing}", "--download"],
     "create it first"),
    ("train-missing-dataset", ["train", "100|20|100", "--dataset", "{missing}/x.npz"], "neither a built-in"),
    ("train-bad-likelihood", ["train", "100|20|100", "--likelihood", "poisson"], "argument --likelihood"),
    # evovae search
    ("search-builtin-subset-past-its-size", ["search", "--dataset", "synthetic", "--train-subset", "20000"],
     "has only 2000 training images"),
    ("search-builtin-val-past-its-size", ["search", "--dataset", "synthetic", "--val-size", "12000"],
     "leaves no training images out of 12000"),
    ("search-nan-lr", ["search", "--in-process", "--lr", "nan"], "argument --lr"),
    ("search-negative-population", ["search", "--population", "-1"], "argument --population"),
    ("search-zero-epochs", ["search", "--in-process", "--epochs", "0"], "argument --epochs"),
    ("search-zero-generations", ["search", "--generations", "0"], "argument --generations"),
    ("search-negative-generations", ["search", "--generations", "-3"], "argument --generations"),
    ("search-zero-budget", ["search", "--budget-epochs", "0"], "argument --budget-epochs"),
    ("search-negative-seed", ["search", "--seed", "-1"], "argument --seed"),
    ("search-rate-above-one", ["search", "--crossover-rate", "1.5"], "argument --crossover-rate: expected a prob"),
    ("search-nan-mutation", ["search", "--mutation-rate", "nan"], "argument --mutation-rate"),
    ("search-fidelities-down", ["search", "--fidelities", "3,1"], "argument --fidelities"),
    ("search-eta-one", ["search", "--eta", "1"], "argument --eta"),
    ("search-zero-layers", ["search", "--max-layers", "0"], "argument --max-layers"),
    ("search-initial-outside", ["search", "--initial", "75|20|100"], "--initial: genotype 75|20|100 is outside"),
    ("search-initial-with-dash", ["search", "--initial", "100|20|100", "-1|20|100"], "bad genotype '-1|20|100'"),
    ("search-initial-twice", ["search", "--initial", "100|20|100", "100|20|100"], "more than once"),
    ("search-initial-too-many", ["search", "--population", "1", "--initial", "100|20|100", "200|20|100"],
     "more than --population 1"),
    ("search-tournament-too-big", ["search", "--strategy", "regularized", "--population", "2",
                                   "--tournament-size", "5"], "--tournament-size: 5 is larger than the population 2"),
    ("search-steady-random", ["search", "--strategy", "random", "--mode", "steady-state"],
     "--mode: steady-state is a form of the strategies evolution, tpe; random is generational only"),
    ("search-asha-one-rung", ["search", "--mode", "asha", "--fidelities", "3"],
     "--fidelities: asha needs two or more rungs"),
    ("search-asha-eta-equals-epochs", ["search", "--mode", "asha", "--epochs", "1"],
     "--fidelities: asha needs two or more rungs"),
    ("search-unknown-operators", ["search", "--operators", "tiny"], "argument --operators: invalid choice"),
    ("search-simulate-without-in-process", ["search", "--simulate-workers", "4"], "give --in-process too"),
    ("search-simulate-zero", ["search", "--in-process", "--simulate-workers", "0"], "argument --simulate-workers"),
    ("search-fidelities-steady", ["search", "--fidelities", "1,3", "--mode", "steady-state"], "--fidelities"),
    ("search-unknown-strategy", ["search", "--strategy", "annealing"], "argument --strategy: invalid choice"),
    ("search-negative-local-workers", ["search", "--local-workers", "-1"], "argument --local-workers"),
    ("search-in-process-heartbeat", ["search", "--in-process", "--heartbeat", "-1"], "argument --heartbeat"),
    ("search-in-process-lease", ["search", "--in-process", "--lease", "nan"], "argument --lease"),
    ("search-flooding-heartbeat", ["search", "--heartbeat", "1e-9"], "from 0.05 to 3600"),
    ("search-sub-second-lease", ["search", "--lease", "0.001"], "argument --lease"),
    ("search-in-process-and-workers", ["search", "--in-process", "--local-workers", "2"], "give one of them"),
    ("search-zero-liveness", ["search", "--liveness", "0"], "argument --liveness"),
    ("search-zero-attempts", ["search", "--max-attempts", "0"], "argument --max-attempts"),
    ("search-bad-bind", ["search", "--bind", "nonsense"], "argument --bind: expected an endpoint"),
    ("search-port-too-big", ["search", "--bind", "tcp://127.0.0.1:70000"], "a port is 1-65535"),
    ("search-sink-past-last-port", ["search", "--bind", "tcp://127.0.0.1:65535"], "give --sink-bind"),
    ("search-sink-is-bind", ["search", "--bind", "tcp://127.0.0.1:6001", "--sink-bind", "tcp://127.0.0.1:6001"],
     "is --bind's endpoint too"),
    ("search-worker-arg-refused", ["search", "--local-workers", "1", "--worker-arg=--fake-sleep=-1"],
     "--worker-arg --fake-sleep=-1: the local workers would refuse it"),
    ("search-worker-arg-unknown", ["search", "--local-workers", "1", "--worker-arg=--bogus"], "unrecognized"),
    ("search-worker-id-shared", ["search", "--local-workers", "2", "--worker-arg=--worker-id=w"], "one id"),
    ("search-in-process-keys", ["search", "--in-process", "--server-key-secret", "{missing}", "--allow", "{empty}"],
     "no such key file"),
    ("search-public-bind-plain", ["search", "--bind", "tcp://*:6123"], "refusing to bind tcp://*:6123"),
    ("search-run-dir-is-file", ["search", "--run-dir", "{file}"], "argument --run-dir: "),
    ("search-run-dir-used", ["search", "--run-dir", "{used}"], "already exists and is not empty"),
    ("search-output-nowhere", ["search", "--output", "{missing}/result.json"], "argument --output: "),
    ("search-output-is-dir", ["search", "--output", "{empty}"], "is a directory"),
    ("search-cache-is-dir", ["search", "--cache", "{empty}"], "argument --cache: "),
    ("search-cache-not-sqlite", ["search", "--cache", "{file}"], "--cache"),
    ("search-resume-missing", ["search", "--resume", "{missing}"], "argument --resume: no such directory"),
    ("search-resume-not-a-run", ["search", "--resume", "{empty}"], "no journal.sqlite"),
    ("search-config-missing", ["search", "--config", "{missing}"], "does not exist"),
    ("search-config-nan", ["search", "--config", "{toml_lr}"], "lr = nan is not valid: expected a finite"),
    ("search-config-is-dir", ["search", "--config", "{empty}"], "cannot be read: Is a directory"),
    ("search-config-not-text", ["search", "--config", "{binary}"], "it is not UTF-8 text"),
    ("search-config-bad-worker-arg", ["search", "--config", "{toml_wa}"], "the local workers would refuse it"),
    ("search-unknown-option", ["search", "--populaton", "3"], "unrecognized arguments: --populaton"),
    # evovae worker
    ("worker-negative-heartbeat", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--heartbeat", "-1"],
     "argument --heartbeat"),
    ("worker-id-with-space", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--worker-id", "a b"],
     "argument --worker-id: expected 1-128 characters"),
    ("worker-id-control", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--worker-id", "a\x07"],
     "argument --worker-id"),
    ("worker-nan-sleep", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--fake-sleep", "nan"],
     "argument --fake-sleep"),
    ("worker-negative-sleep", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--fake-sleep", "-1"],
     "argument --fake-sleep"),
    ("worker-negative-max-tasks", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--max-tasks", "-1"],
     "argument --max-tasks"),
    ("worker-bad-connect", ["worker", "--connect", "nonsense"], "argument --connect: expected an endpoint"),
    ("worker-wildcard-connect", ["worker", "--connect", "tcp://*:5557"], "argument --connect"),
    ("worker-no-connect", ["worker", "--fake"], "required: --connect"),
    ("worker-sink-past-last-port", ["worker", "--connect", "tcp://127.0.0.1:65535", "--fake"], "give --sink"),
    ("worker-bad-poison", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--poison", "x"],
     "argument --poison: bad genotype 'x'"),
    ("worker-missing-keys", ["worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--server-key", "{missing}",
                             "--key", "{missing}"], "{missing}"),
    ("worker-insecure-and-key", ["worker", "--connect", "tcp://127.0.0.1:9", "--insecure", "--server-key", "x"],
     "--insecure excludes"),
    ("worker-missing-data-root", ["worker", "--connect", "tcp://127.0.0.1:9", "--data-root", "{missing}"],
     "argument --data-root"),
    ("worker-config-not-text", ["worker", "--config", "{binary}"], "not valid TOML"),
    ("worker-config-bad-id", ["worker", "--config", "{toml_id}", "--connect", "tcp://127.0.0.1:9"],
     "worker_id = 'a b' is not valid: expected 1-128"),
    # evovae keys
    ("keys-no-action", ["keys"], "required: ACTION"),
    ("keys-bad-name", ["keys", "generate", "--dir", "{empty}", "a/b"], "bad key name 'a/b'"),
    ("keys-dir-is-file", ["keys", "generate", "--dir", "{file}", "head"], "is not a directory"),
    ("keys-show-missing", ["keys", "show", "{missing}"], "{missing}"),
    # evovae export, sample, reconstruct
    ("export-20-digit-width", ["export", "--genotype", "9" * 20 + "|20|100", "--out", "m"], "is too large"),
    ("export-genotype-with-dash", ["export", "--genotype", "-5|20|100", "--out", "m"], "bad genotype '-5|20|100'"),
    ("export-no-out", ["export", "--genotype", "100|20|100"], "required: --out"),
    ("export-zero-epochs", ["export", "--genotype", "100|20|100", "--out", "m", "--epochs", "0"], "--epochs"),
    ("export-nan-lr", ["export", "--genotype", "100|20|100", "--out", "m", "--lr", "nan"], "argument --lr"),
    ("export-run-and-genotype", ["export", "--genotype", "100|20|100", "--run", "{empty}", "--out", "m"],
     "either --run RUN_DIR or --genotype"),
    ("export-run-missing", ["export", "--run", "{missing}", "--out", "m"], "argument --run: no such directory"),
    ("export-run-not-a-run", ["export", "--run", "{empty}", "--out", "m"], "no journal.sqlite"),
    ("export-negative-iw", ["export", "--genotype", "100|20|100", "--out", "m", "--iw-samples", "-1"],
     "argument --iw-samples"),
    ("export-zero-processes", ["export", "--genotype", "100|20|100", "--out", "m", "--processes", "0"],
     "argument --processes"),
    ("export-out-is-file", ["export", "--genotype", "100|20|100", "--out", "{file}"], "is not a directory"),
    ("sample-missing-model", ["sample", "{missing}"], "argument MODEL_DIR: no such directory"),
    ("sample-not-a-model", ["sample", "{empty}"], "not an evovae model directory"),
    ("sample-zero-n", ["sample", "{empty}", "--n", "0"], "argument --n: expected a whole number from 1"),
    ("sample-zero-nrow", ["sample", "{empty}", "--nrow", "0"], "argument --nrow"),
    ("sample-out-is-dir", ["sample", "{empty}", "--out", "{empty}"], "argument --out: "),
    ("reconstruct-missing-model", ["reconstruct", "{missing}"], "no such directory"),
    ("reconstruct-missing-root", ["reconstruct", "{empty}", "--data-root", "{missing}"], "argument --data-root"),
    ("reconstruct-missing-data", ["reconstruct", "{empty}", "--data", "{missing}"],
     "argument --data: no such file or folder"),
    # evovae encode, score
    ("encode-missing-model", ["encode", "{missing}", "--data", "{file}", "--out", "z.npy"],
     "argument MODEL_DIR: no such directory"),
    ("encode-no-data", ["encode", "{empty}", "--out", "z.npy"], "required: --data"),
    ("encode-no-out", ["encode", "{empty}", "--data", "{file}"], "required: --out"),
    ("encode-missing-data", ["encode", "{empty}", "--data", "{missing}", "--out", "z.npy"],
     "argument --data: no such file or folder"),
    ("encode-not-a-model", ["encode", "{empty}", "--data", "{file}", "--out", "z.npy"],
     "not an evovae model directory"),
    ("encode-out-suffix", ["encode", "{empty}", "--data", "{file}", "--out", "z.txt"], "give a name ending in .npy"),
    ("score-negative-k", ["score", "{empty}", "--data", "{file}", "--k", "-1"], "argument --k"),
    ("score-not-a-model", ["score", "{empty}", "--data", "{file}"], "not an evovae model directory"),
    ("score-out-is-dir", ["score", "{empty}", "--data", "{file}", "--out", "{empty}"], "argument --out: "),
    # evovae experiment paper / compare
    ("paper-zero-population", ["experiment", "paper", "--population", "0"], "argument --population"),
    ("paper-zero-epoch", ["experiment", "paper", "--search-epochs", "0,2"], "argument --search-epochs"),
    ("paper-negative-seed", ["experiment", "paper", "--seed", "-1"], "argument --seed"),
    ("paper-negative-workers", ["experiment", "paper", "--local-workers", "-1"], "argument --local-workers"),
    ("paper-plain-public-bind", ["experiment", "paper", "--bind", "tcp://*:6123"], "refusing to bind"),
    ("paper-resume-not-a-run", ["experiment", "paper", "--resume", "{empty}"], "no experiment.json in it"),
    ("paper-resume-with-seed", ["experiment", "paper", "--resume", "{empty}", "--seed", "3"], "leave out --seed"),
    ("paper-missing-dataset", ["experiment", "paper", "--dataset", "{missing}"], "neither a built-in"),
    ("paper-unknown-preset", ["experiment", "paper", "--preset", "huge"], "argument --preset: invalid choice"),
    ("experiment-unknown", ["experiment", "fidelity"], "invalid choice: 'fidelity'"),
    ("compare-negative-fidelity", ["experiment", "compare", "--fidelity-count", "-1"], "argument --fidelity-count"),
    ("compare-nan-heartbeat", ["experiment", "compare", "--heartbeat", "nan"], "argument --heartbeat"),
    ("compare-unknown-arm", ["experiment", "compare", "--arms", "evolution,annealing"], "unknown 'annealing'"),
    ("compare-arm-twice", ["experiment", "compare", "--arms", "random,random"], "each once"),
    ("compare-zero-seeds", ["experiment", "compare", "--seeds", "0"], "argument --seeds"),
    ("compare-seeds-past-the-largest", ["experiment", "compare", "--preset", "tiny", "--dataset", "synthetic",
                                        "--first-seed", "4294967295", "--seeds", "2"], "passes the largest seed"),
    ("compare-resume-missing", ["experiment", "compare", "--resume", "{missing}"], "argument --resume"),
    ("compare-run-dir-used", ["experiment", "compare", "--run-dir", "{used}"], "exists and is not empty"),
    # evovae logs, and evovae itself
    ("logs-no-action", ["logs"], "required: ACTION"),
    ("logs-no-files", ["logs", "summarize"], "required: RUN_DIR|FILE"),
    ("logs-missing-file", ["logs", "summarize", "{missing}"], "{missing}"),
    ("logs-zero-bucket", ["logs", "summarize", "{file}", "--bucket", "0"], "argument --bucket"),
    ("logs-trace-no-files", ["logs", "trace", "abcdef"], "required: RUN_DIR|FILE"),
    # evovae report
    ("report-no-run-dir", ["report"], "required: RUN_DIR"),
    ("report-missing", ["report", "{missing}"], "no such directory"),
    ("report-not-a-run", ["report", "{empty}"], "no journal.sqlite in it"),
    ("report-a-file", ["report", "{file}"], "is not a run directory (not a directory)"),
    ("report-top-21", ["report", "{empty}", "--top", "21"], "argument --top: 21 is not between 1 and 20"),
    # evovae dashboard
    ("dashboard-no-run-dir", ["dashboard"], "required: RUN_DIR"),
    ("dashboard-missing", ["dashboard", "{missing}"], "no such directory"),
    ("dashboard-not-a-run", ["dashboard", "{empty}"], "has no journal.sqlite"),
    ("dashboard-a-file", ["dashboard", "{file}"], "is not a directory"),
    ("dashboard-remote-bind", ["dashboard", "{empty}", "--host", "0.0.0.0"], "add --allow-remote"),
    ("dashboard-port-0", ["dashboard", "{empty}", "--port", "0"], "argument --port"),
    ("no-command", [], "required: COMMAND"),
    ("unknown-command", ["serve"], "invalid choice: 'serve'"),
]


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A fresh working directory, and the paths the cases name, made before the listing is taken."""
    given = tmp_path / "given"
    (given / "empty").mkdir(parents=True)
    (given / "used").mkdir()
    (given / "used" / "notes.txt").write_text("kept\n")
    (given / "plain.txt").write_text("not a directory, not a database\n")
    (given / "lr.toml").write_text(TOML_BAD_LR)
    (given / "id.toml").write_text(TOML_BAD_ID)
    (given / "wa.toml").write_text('[search]\nlocal-workers = 1\nworker-arg = ["--fake-sleep=nan"]\n')
    (given / "binary.toml").write_bytes(b"\xff\xfe\x00")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    names = {"missing": str(tmp_path / "missing"), "file": str(given / "plain.txt"), "empty": str(given / "empty"),
             "used": str(given / "used"), "toml_lr": str(given / "lr.toml"), "toml_id": str(given / "id.toml"),
             "toml_wa": str(given / "wa.toml"), "binary": str(given / "binary.toml")}
    return tmp_path, names


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _fill(items: list[str], names: dict[str, str]) -> list[str]:
    return [item.format(**names) for item in items]


@pytest.fixture
def deadline():
    """A command that should have refused its input but serves instead is stopped (a failure, not a hang)."""
    def expired(*_):
        raise TimeoutError("the command ran on: its bad input was not refused")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    from evo.cli.app import main

    try:
        status = main(argv)
    except SystemExit as exc:  # evovae logs exits through argparse
        status = exc.code
    return status, capsys.readouterr().err


def _check_one_line(status, err: str, piece: str) -> None:
    lines = err.splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("evovae") and ": error: " in lines[0], lines[0]
    assert piece in lines[0], lines[0]


@pytest.mark.parametrize(("argv", "piece"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_created(place, capsys, deadline, argv, piece):
    root, names = place
    before = _listing(root)
    status, err = _run_in_process(_fill(argv, names), capsys)
    _check_one_line(status, err, piece.format(**names))
    assert _listing(root) == before


def test_the_types_take_settings_values_and_normalise_text():
    from evo.cmdline import validate as v

    assert v.whole(1, 5)(3) == 3 == v.whole(1, 5)(" 3 ") and v.number(0, 1)(1) == 1.0
    assert v.whole_list(1, increasing=True)(" 1, 3,9") == "1,3,9" and v.genotype()(" 850 | 20|1000") == "850|20|1000"
    assert v.choice_list(("a", "b"))("b, a") == "b,a" and v.BIND("tcp://*:*") == "tcp://*:*"
    for kind, value in ((v.whole(), True), (v.whole(), 2.0), (v.number(), "1e999"), (v.probability(), -0.0001),
                        (v.CONNECT, "tcp://*:5557"), (v.CONNECT, "tcp://h:5557 "), (v.worker_id, "x" * 129)):
        with pytest.raises(ValueError, match="expected"):  # OptionError: argparse's and a settings file's
            kind(value)


def test_the_table_covers_every_command():
    from evo.cli.app import DELEGATED

    commands = {case[1][0] for case in CASES if case[1]}
    assert {"train", "search", *DELEGATED} <= commands
    assert {case[1][1] for case in CASES if case[1][:1] == ["experiment"]} >= {"paper", "compare"}
    assert len(CASES) >= 60


def test_a_device_this_machine_lacks_is_one_line(place, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root, _ = place
    before = _listing(root)
    for argv in (["train", "100|20|100", "--device", "cuda"], ["search", "--in-process", "--device", "cuda:1"]):
        status, err = _run_in_process(argv, capsys)
        _check_one_line(status, err, "cuda device(s); use --device cpu")
    assert _listing(root) == before


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved model of images (one epoch on synthetic data) for sample and reconstruct."""
    from evo.genotype import parse_genotype
    from evo.spec import TrainSpec
    from gpuworker.export import train_and_save

    path = tmp_path_factory.mktemp("model") / "m"
    train_and_save(parse_genotype("50|10|50"), TrainSpec(dataset="synthetic", epochs=1, train_subset=64, val_size=64),
                   path, device="cpu")
    return path


@pytest.mark.parametrize(("argv", "piece"), [
    (["sample", "{model}", "--out", "samples.txt"], "--out samples.txt: a model of images writes a picture"),
    (["sample", "{model}", "--out", "samples"], "give a name ending in .png"),
    (["reconstruct", "{model}", "--out", "recon.csv"], "--out recon.csv: a model of images"),
    (["reconstruct", "{model}", "--n", "-2"], "argument --n"),
], ids=["sample-txt", "sample-no-suffix", "reconstruct-csv", "reconstruct-negative-n"])
def test_a_model_written_where_it_cannot_be_is_one_line(place, capsys, model_dir, argv, piece):
    root, names = place
    before = _listing(root)
    status, err = _run_in_process([a.format(model=model_dir, **names) for a in argv], capsys)
    _check_one_line(status, err, piece)
    assert _listing(root) == before


SUBPROCESS = [  # (argv after the interpreter, a piece of the one line): as a person types them
    (["-m", "evo.cli", "train", "9" * 20 + "|20|100"], "is too large"),
    (["-m", "evo.cli", "search", "--lr", "nan", "--population", "2"], "argument --lr"),
    (["-m", "evo.cli", "worker", "--connect", "tcp://127.0.0.1:9", "--fake", "--heartbeat", "-1"], "--heartbeat"),
    (["-m", "evo.cli.compare", "--fidelity-count", "-1"], "argument --fidelity-count"),
    (["-m", "evo.cli", "logs", "summarize", "--bucket", "nan", "x.log"], "argument --bucket"),
]


@pytest.mark.parametrize(("argv", "piece"), SUBPROCESS, ids=[" ".join(a[1:4]) for a, _ in SUBPROCESS])
def test_bad_input_as_a_real_process(tmp_path, argv, piece):
    done = subprocess.run([PYTHON, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    _check_one_line(done.returncode, done.stderr, piece)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_dir", ["runs/r1", "{empty}"], ids=["new", "existing-empty"])
def test_a_refused_bind_leaves_no_run_directory_and_no_cache(place, capsys, run_dir):
    """The port is taken: the run directory (or what went into an empty one) and the cache this start made
    are removed again."""
    root, names = place
    before = _listing(root)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, err = _run_in_process(["search", "--bind", f"tcp://127.0.0.1:{port}", "--run-dir",
                                       run_dir.format(**names), "--cache", "caches/results.sqlite",
                                       "--log-level", "error"], capsys)
    assert status == 2 and "cannot bind" in err.splitlines()[-1], err
    assert _listing(root) == before


# ------------------------------------------------------------------ a resumed search says what happened

SMALL = ["--in-process", "--dataset", "synthetic", "--population", "2", "--offspring", "1", "--generations", "2",
         "--epochs", "1", "--train-subset", "64", "--val-size", "64", "--max-layers", "1", "--log-level", "warning"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished search (2 generations, 3 evaluations, trained in this process) to resume: copy it first."""
    from evo.cli.app import main

    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["search", *SMALL, "--run-dir", str(run)]) == 0
    return run


@pytest.fixture
def resumable(finished, tmp_path, monkeypatch, capsys):
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def test_a_resume_names_what_it_ignores_also_from_a_config_file(resumable, tmp_path, capsys):
    first = json.loads((resumable / "result.json").read_text())
    settings = tmp_path / "resume.toml"
    settings.write_text(TOML_RESUMED)
    status, err = _run_in_process(["search", "--resume", str(resumable), "--in-process", "--config", str(settings),
                                   "--lr", "0.01", "--run-dir", "elsewhere", "--log-level", "warning"], capsys)
    assert status == 0
    notes = [line for line in err.splitlines() if line.startswith("evovae: note:")]
    assert len(notes) == 1, err
    for named in ("--lr", "--run-dir", f"--seed (from {settings})", f"--population (from {settings})"):
        assert named in notes[0], notes[0]
    assert "--offspring" not in notes[0] and "--lr (from" not in notes[0] and not (tmp_path / "elsewhere").exists()
    again = json.loads((resumable / "result.json").read_text())
    assert again["replayed_from_journal"] == first["evaluated_now"] == 3 and again["evaluated_now"] == 0
    assert again["population"] == first["population"]


def test_a_resume_may_not_give_fewer_generations(resumable, capsys):
    status, err = _run_in_process(["search", "--resume", str(resumable), "--in-process", "--generations", "1"], capsys)
    _check_one_line(status, err, "--generations 1: ")
    assert "was started for 2" in err


def test_a_resumed_comparison_names_what_it_ignores(tmp_path, monkeypatch, capsys):
    from evo.cli import compare

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "cmp"
    args = compare._parser().parse_args(["--preset", "tiny", "--dataset", "synthetic", "--run-dir", str(run)])
    compare._create(*compare._plan(args))
    listing = _listing(tmp_path)
    status = compare.main(["--resume", str(run), "--preset", "tiny", "--seeds", "2", "--bind", "tcp://*:6123"])
    note, error = capsys.readouterr().err.splitlines()
    assert status == 2 and "refusing to bind tcp://*:6123" in error
    assert note.startswith(f"evovae: note: resuming {run}: ") and note.endswith("--preset, --seeds are ignored")
    assert _listing(tmp_path) == listing


def test_the_final_line_of_a_resume_counts_the_replayed_evaluations(resumable, capsys):
    from evo.cli.app import main

    assert main(["search", "--resume", str(resumable), "--in-process", "--generations", "3",
                 "--log-level", "warning"]) == 0
    out = capsys.readouterr().out.splitlines()
    done = json.loads((resumable / "result.json").read_text())
    last = next(line for line in reversed(out) if line.startswith("stopped:"))
    replayed = done["replayed_from_journal"]
    # the default search is asynchronous (TPE under Hyperband): --generations bounds its evaluations
    assert replayed == 3 and done["evaluated_now"] == 1 and done["stop_reason"] == "evaluations"
    assert last.startswith(f"stopped: evaluations; evaluations: 1 run now, "
                           f"{replayed + done['reused_from_journal']} from the journal ({replayed} replayed, "), last


@pytest.mark.slow
def test_every_option_a_journal_fixes_is_named_when_a_resume_is_given_it_even_at_its_default(resumable, capsys):
    """No option that defines a search is silently ignored on resume: each one, given at its parser default
    (the case a comparison with the defaults cannot see), is named in the note."""
    from dataclasses import fields as dataclass_fields

    from evo.cli.app import _parser, _subparser
    from evo.cli.search_options import SEARCH_KEYS
    from evo.strategies import StrategyOptions

    assert {f.name for f in dataclass_fields(StrategyOptions)} <= set(SEARCH_KEYS)
    search = _subparser(_parser(), "search")
    flags = {a.dest: a for a in search._actions if a.option_strings}
    checked = 0
    for key in SEARCH_KEYS:
        action = flags.get(key)
        if action is None or key == "generations":  # generations may be extended on resume
            continue
        if action.nargs == 0:        # a switch: giving it is the value
            argv = [action.option_strings[0]]
        elif action.default in (None, [], ""):
            continue                 # no value to give at its default (e.g. --fidelities, --initial)
        else:
            argv = [action.option_strings[0], str(action.default)]
        status, err = _run_in_process(["search", "--resume", str(resumable), "--in-process", *argv,
                                       "--log-level", "warning"], capsys)
        assert status == 0, err
        assert f"{action.option_strings[0]}" in err and "is ignored" in err, (key, err)
        checked += 1
    assert checked >= 15
