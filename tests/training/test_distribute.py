import json
import os
import subprocess
import sys

import pytest

from captioner.training.distribute import is_chief, make_strategy
from tests.helpers import ROOT


def test_one_step_on_two_devices_equals_the_one_device_step():
    # logical devices must be set before TensorFlow starts: a fresh process
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "training" / "distributed_step_check.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3  # the step changed the weights
    assert result["difference"] < 1e-5
    for key, value in result["single_losses"].items():
        assert result["split_losses"][key] == pytest.approx(value, rel=1e-5)


def test_strategy_names():
    assert make_strategy("default").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("ring")


def test_chief_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    cluster = {"worker": ["a:1", "b:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    assert is_chief()
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        is_chief()
