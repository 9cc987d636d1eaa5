"""TensorFlow's start-up (quiet unless the user asks for its messages), the device in use, and
training steps that repeat exactly."""

from __future__ import annotations

import contextlib
import os
import sys

# Set by `start_tensorflow` when it chose the log level itself (the user had not).
_QUIETED = "_CAPTIONER_QUIET_TF"


@contextlib.contextmanager
def _stderr_silenced():
    """Sends file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines bypass Python."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow(verbose: bool = False) -> None:
    """Imports TensorFlow and finds its devices, without its start-up lines on stderr.

    On a CPU machine TensorFlow prints lines such as "Could not find cuda drivers", "failed
    call to cuInit" and "oneDNN custom operations are on" while it starts: they are not
    errors, but read like them. They are printed before its log level applies, so they are
    silenced at the file descriptor while TensorFlow imports and lists its devices, and later
    messages are filtered by `TF_CPP_MIN_LOG_LEVEL=3` (oneDNN's "supports DT_HALF only on
    platforms with AVX-512" comes at the error level; real failures reach Python as exceptions).

    Args:
        verbose: show everything (`--debug`). A `TF_CPP_MIN_LOG_LEVEL` that the user set
            is also left alone, and so are its start-up lines.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose or ("TF_CPP_MIN_LOG_LEVEL" in os.environ and _QUIETED not in os.environ):
        import tensorflow as tf

        tf.config.list_physical_devices()
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ[_QUIETED] = "1"
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe ("failed call to cuInit") runs here
    tf.get_logger().setLevel("ERROR")


def device_description() -> str:
    """Where TensorFlow computes, in words: "CPU (2 cores)" or "GPU 0 (NVIDIA H200)"."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"CPU ({os.cpu_count()} cores)"
    names = []
    for index, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(f"GPU {index} ({details.get('device_name', 'unknown')})")
    return ", ".join(names)


@contextlib.contextmanager
def repeatable_steps():
    """Runs the compiled functions called inside without Grappler's graph rewrites.

    A decoder step uses the annotations at every time step, so their gradient is a sum of
    one term per step. With Grappler on, the same training step on the same batch gave
    gradients of the annotations' projection that differ in the seventh digit from call to
    call (with one inter-op thread they did not), and two runs of one command drifted
    apart. None of the rewrites that have a switch of their own caused it; the memory
    optimiser, which has none, can turn such a sum into an accumulation in the order its
    terms are ready. Without the rewrites a seeded run repeats exactly, and the training
    step is no slower (`benchmarks/photo_step.py`). The options in force before are
    restored on exit.
    """
    import tensorflow as tf

    saved = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": saved.get("disable_meta_optimizer", False)}
        )
