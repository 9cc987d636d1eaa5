"""`tf.distribute` strategies by name: one code path for one device, all local GPUs, or
several machines."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name: str = "default", devices: list[str] | None = None):
    """A distribution strategy.

    Args:
        name: "default" (the current device), "mirrored" (all local GPUs, or `devices`),
            or "multiworker" (the machines that `TF_CONFIG` names, all their GPUs).
        devices: for "mirrored", the devices to use (e.g. two logical CPUs in tests).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def is_chief() -> bool:
    """Whether this process writes the run's files (worker 0 or the chief of `TF_CONFIG`)."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return True
    try:
        task = json.loads(config).get("task", {})
    except json.JSONDecodeError:
        raise ValueError("TF_CONFIG is not valid JSON") from None
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in config)
