"""The `mamlbook` command: what a user types in the README works, and bad input gets one clear line."""

import json
import subprocess
import sys

import pytest

from mamlbook.bench.runner import read_rows
from mamlbook.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mamlbook", *args], capture_output=True, text=True, timeout=600)


def test_train_then_resume_then_eval(tmp_path, capsys):
    out = tmp_path / "sine"
    common = ["--eval-every", "2", "--meta-batch", "4", "--no-progress", "--baseline-iterations", "5"]
    assert main(["train", "sinusoid", "--iterations", "3", "--out", str(out), *common]) == 0
    assert (out / "baseline.pt").exists() and (out / "learning_curve.png").exists()
    assert main(["train", "sinusoid", "--iterations", "5", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert main(["eval", str(out), "--tasks", "20", "--steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "MAML" in printed and "pretrained" in printed
    report = json.loads((out / "eval.json").read_text())
    assert report["iteration"] == 5 and len(report["methods"]["MAML"]["mean"]) == 4
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_training_into_an_existing_run_without_resume_is_refused(tmp_path, capsys):
    out = tmp_path / "sine"
    assert (
        main(
            ["train", "sinusoid", "--iterations", "2", "--out", str(out), "--no-progress", "--baseline-iterations", "0"]
        )
        == 0
    )
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "sinusoid", "--iterations", "2", "--out", str(out), "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_without_switches_mamlpp_pieces_off_in_the_saved_config(tmp_path, capsys):
    out = tmp_path / "pp"
    args = ["train", "sinusoid", "--algorithm", "mamlpp", "--without", "CA", "--without", "da", "--inner-steps", "2"]
    assert main([*args, "--iterations", "2", "--out", str(out), "--no-progress", "--baseline-iterations", "0"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["algorithm_options"] == {"cosine": False, "da": False}
    assert main(["train", "sinusoid", "--out", str(out), "--resume", "--algorithm", "mamlpp", "--without", "msl"]) == 2
    assert "would change it" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "sinusiod", "--out", "{tmp}/x"], "unknown task 'sinusiod'"),
        (["train", "sinusoid", "--out", "{tmp}/x", "--inner-steps", "0"], "steps must be an integer >= 1"),
        (["train", "sinusoid", "--out", "{tmp}/x", "--inner-steps", "-3"], "steps must be an integer >= 1"),
        (["train", "sinusoid", "--out", "{tmp}/x", "--k-shot", "0"], "k_shot (K) must be"),
        (["train", "sinusoid", "--out", "{tmp}/x", "--without", "ca"], "needs --algorithm mamlpp"),
        (["train", "sinusoid", "--out", "{tmp}/x", "--algorithm", "mamlpp", "--without", "adam"], "invalid choice"),
        (["eval", "{tmp}/nothing"], "no checkpoint"),
        (["bench", "--problems", "imagenet"], "unknown problem 'imagenet'"),
    ],
)
def test_bad_input_gets_one_clear_error_line(tmp_path, capsys, args, message):
    # In this process: a fresh interpreter per case cost 4 s each; test_truncated_checkpoint_on_the_command_line
    # runs the real `python -m mamlbook` entry point. An uncaught exception here fails the test, as a
    # traceback would.
    try:
        code = main([a.format(tmp=tmp_path) for a in args])
    except SystemExit as stop:  # argparse's own errors (unknown choice) exit with status 2
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]  # argparse prints its usage before the error line
    assert last.startswith("mamlbook") and message in last, err


def test_truncated_checkpoint_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            ["train", "sinusoid", "--iterations", "2", "--out", str(out), "--no-progress", "--baseline-iterations", "0"]
        )
        == 0
    )
    ckpt = out / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    result = run_cli("eval", str(out))
    assert result.returncode == 2 and "truncated or corrupt" in result.stderr and "Traceback" not in result.stderr


def test_bench_json_rows_have_the_documented_keys(tmp_path):
    path = tmp_path / "bench.json"
    # In this process (tests/test_bench_engine.py covers the isolated runs and their peak memory): every
    # strategy still gets its row, in seconds instead of a fresh interpreter per strategy.
    args = ["bench", "--impls", "mamlbook", "--meta-batch", "4", "--repeat", "2", "--warmup", "1", "--in-process"]
    args += ["--json", str(path)]
    assert main(args) == 0
    assert json.loads(path.read_text())["format"] == 1, "a typed record, not a bare list"
    rows = read_rows(path)  # a row missing a documented column fails here, naming it
    assert {r.strategy for r in rows} >= {"loop", "vmap"}
    for row in rows:
        assert row.problem == "sinusoid" and row.impl.startswith("mamlbook") and row.meta_batch == 4
        assert row.order in (1, 2) and row.steps >= 1 and row.peak_mib is not None
        assert row.ms_min <= row.ms_median and row.command and row.mamlbook  # what produced it


def test_package_help_describes_the_api():
    result = subprocess.run([sys.executable, "-c", "import mamlbook; help(mamlbook)"], capture_output=True, text=True)
    assert result.returncode == 0 and "meta_gradient" in result.stdout and "functional_call" in result.stdout
