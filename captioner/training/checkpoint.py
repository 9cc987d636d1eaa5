"""Training checkpoints: model and optimiser variables plus the loop's state, in one file
written atomically (a crash while writing keeps the previous checkpoint)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from captioner.files import write_bytes_atomic

CHECKPOINT_FILE = "checkpoint.npz"
FINE_TUNE_CHECKPOINT_FILE = "fine_tune_checkpoint.npz"  # the second stage's, see fine_tuning
SCST_CHECKPOINT_FILE = "scst_checkpoint.npz"  # the self-critical stage's, see scst


def _values(variables) -> list[np.ndarray]:
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in variables]


class CheckpointStore:
    """Saves and restores `(model variables, optimiser variables, state)` in one `.npz` file.

    Args:
        path: the checkpoint file.
        read_only: only restore from it; `save` does nothing (the workers of a multi-worker
            run other than the chief read the chief's checkpoint, on a shared filesystem).
    """

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, model_variables: Sequence, optimizer_variables: Sequence, state: dict) -> None:
        """Writes the checkpoint atomically.

        Raises:
            FloatingPointError: a variable holds NaN or Inf; the previous checkpoint is kept.
        """
        if self.read_only:
            return
        model_values = _values(model_variables)
        optimizer_values = _values(optimizer_variables)
        for kind, values, variables in (
            ("model", model_values, model_variables),
            ("optimizer", optimizer_values, optimizer_variables),
        ):
            for value, variable in zip(values, variables):
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    name = getattr(variable, "path", getattr(variable, "name", "?"))
                    raise FloatingPointError(f"{kind} variable {name} is not finite")
        arrays = {f"model/{i}": v for i, v in enumerate(model_values)}
        arrays.update({f"optimizer/{i}": v for i, v in enumerate(optimizer_values)})
        arrays["state"] = np.array(json.dumps(state))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(self.path, buffer.getvalue())

    def load(self, model_variables: Sequence, optimizer_variables: Sequence) -> dict:
        """Assigns the saved values to the variables and returns the saved state.

        Raises:
            ValueError: the file is unreadable or was saved from a different model.
        """
        try:
            with np.load(self.path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as error:
            raise ValueError(f"{self.path}: not a readable checkpoint ({error})") from None
        for kind, variables in (("model", model_variables), ("optimizer", optimizer_variables)):
            saved = sorted(
                (k for k in arrays if k.startswith(kind + "/")), key=lambda k: int(k.split("/")[1])
            )
            if len(saved) != len(variables):
                raise ValueError(
                    f"{self.path}: {len(saved)} {kind} variables saved, the {kind} has "
                    f"{len(variables)}; it was saved from a different configuration"
                )
            for key, variable in zip(saved, variables):
                if tuple(arrays[key].shape) != tuple(variable.shape):
                    name = getattr(variable, "path", getattr(variable, "name", "?"))
                    raise ValueError(
                        f"{self.path}: {kind} variable {name} has shape {tuple(variable.shape)}, "
                        f"saved {tuple(arrays[key].shape)}; saved from a different configuration"
                    )
            for key, variable in zip(saved, variables):
                variable.assign(arrays[key])
        return json.loads(str(arrays["state"]))
