"""A `captioner train` process killed mid-epoch resumes from its checkpoint (slow: runs the
command line several times in subprocesses)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from captioner.cli import main
from tests.helpers import ROOT

TINY = [
    "--encoder", "small_cnn", "--image-size", "32",
    "--embed-dim", "8", "--units", "16", "--attention-dim", "8",
    "--max-length", "8", "--batch-size", "4", "--epochs", "3", "--val-images", "4",
    "--checkpoint-steps", "2", "--no-tensorboard",
]  # fmt: skip


def checkpoint_state(run_dir: Path):
    try:
        with np.load(run_dir / "checkpoint.npz") as data:
            return json.loads(str(data["state"]))
    except (OSError, ValueError, KeyError):
        return None


def train_command(data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "captioner.cli", "train", "--data", str(data),
            "--out", str(run_dir), *TINY]  # fmt: skip


def start(command):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_for_mid_epoch_checkpoint(process, run_dir, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = checkpoint_state(run_dir)
        if state is not None and state["batch"] > 0 and not state["finished"]:
            return state
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no mid-epoch checkpoint appeared")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    args = ["synth", "--out", str(root / "synth"), "--num-train", "40", "--num-val", "4",
            "--num-test", "2", "--image-size", "64"]  # fmt: skip
    assert main(args) == 0
    return root / "synth" / "dataset.json"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_the_same_command_resumes_and_finishes(dataset, tmp_path):
    run_dir = tmp_path / "killed"
    command = train_command(dataset, run_dir)
    process = start(command)
    state = wait_for_mid_epoch_checkpoint(process, run_dir)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = checkpoint_state(run_dir)  # may be later than `state`, never earlier
    assert killed_at["global_step"] >= state["global_step"]
    assert not killed_at["finished"]

    resumed = start(command)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    assert f"resuming from epoch {killed_at['epoch'] + 1}, batch {killed_at['batch']}" in out
    final = checkpoint_state(run_dir)
    assert final["finished"] and final["global_step"] == 3 * 10
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (run_dir / "training_curves.png").is_file()

    # the same result as a run that was never interrupted
    whole_dir = tmp_path / "whole"
    whole = start(train_command(dataset, whole_dir))
    _, err = whole.communicate(timeout=900)
    assert whole.returncode == 0, err
    expected = json.loads((whole_dir / "history.json").read_text())
    for got, want in zip(history, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)

    # and running the finished command again does nothing more
    again = start(command)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "already complete" in out


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(dataset, tmp_path):
    run_dir = tmp_path / "interrupted"
    process = start(train_command(dataset, run_dir))
    wait_for_mid_epoch_checkpoint(process, run_dir)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "SIGINT: stopped at epoch" in err and "run the same command to resume" in err
    state = checkpoint_state(run_dir)
    assert state is not None and not state["finished"]
