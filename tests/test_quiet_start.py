"""Commands start without TensorFlow's start-up lines on stderr, unless asked for them."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT

START_UP_LINES = ("cuda", "cuinit", "onednn", "cpu_feature_guard", "absl::initializelog")


def run(args, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "captioner.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def start_up_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(s in line.lower() for s in START_UP_LINES)]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("quiet") / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(path)
    return path


def test_caption_prints_no_tensorflow_start_up_lines(untrained_run, image):
    result = run(["caption", "--model", str(untrained_run), str(image), "--beam-size", "1"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{image}: ")
    assert start_up_lines(result.stderr) == [], result.stderr


def test_debug_or_the_users_log_level_shows_them(untrained_run, image):
    plain = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; tf.config.list_physical_devices()"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
        timeout=300,
    )
    if not start_up_lines(plain.stderr):
        pytest.skip("this TensorFlow build prints no start-up lines")
    args = ["caption", "--model", str(untrained_run), str(image), "--beam-size", "1"]
    assert start_up_lines(run(["--debug", *args]).stderr)
    assert start_up_lines(run(args, {"TF_CPP_MIN_LOG_LEVEL": "0"}).stderr)
