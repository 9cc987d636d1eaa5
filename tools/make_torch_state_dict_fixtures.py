"""Writes the tiny torch files that tests/test_torch_weights.py reads without torch.

    /work/torchvenv/bin/python tools/make_torch_state_dict_fixtures.py

tiny_zip.pth is torch's default (zip) layout, tiny_legacy.pth the pre-zip layout that the
offline ImageNet weight files use. Both hold the same tensors, chosen to cover views
(transposed, offset into a shared storage), 0-d tensors, several dtypes and a Parameter.
"""

import collections
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch_state_dicts"


def state() -> collections.OrderedDict:
    tensors = collections.OrderedDict()
    tensors["conv.weight"] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2)
    base = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    tensors["shared.t"] = base.t()  # a non-contiguous view, strides (1, 4)
    tensors["shared.row"] = base[1]  # a view with a storage offset
    tensors["half"] = torch.tensor([0.5, -2.0], dtype=torch.float16)
    tensors["bf16"] = torch.tensor([1.5, -3.0], dtype=torch.bfloat16)
    tensors["steps"] = torch.tensor(7)  # 0-d int64
    tensors["mask"] = torch.tensor([True, False])
    tensors["param"] = torch.nn.Parameter(torch.ones(2))
    return tensors


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    torch.save(state(), OUT / "tiny_zip.pth")
    torch.save(state(), OUT / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    print(f"written to {OUT}")
