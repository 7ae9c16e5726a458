"""How many bytes a model folder's weights take once loaded in a given dtype, read from file headers.

The store asks before a build that would put the weights straight on the compute device: does the
model fit in the free memory (after offloading idle models)? Only safetensors headers are read (a
few KB per file). A folder holding the same weights twice (``model.safetensors`` and
``model.fp16.safetensors``) counts them once; shards (``-00001-of-00004``) add up.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import torch

_VARIANT = re.compile(r"\.(fp16|bf16|fp32|fp8|int8)(?=\.safetensors$)")
_SHARD = re.compile(r"-\d{5}-of-\d{5}(?=(\.[a-z0-9]+)?\.safetensors$)")
_FLOAT_TYPES = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}
_TYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def file_bytes_in(path: Path, dtype: torch.dtype | None) -> int:
    """Bytes of one safetensors file's tensors with floating ones cast to ``dtype`` (None: as stored)."""
    size = torch.empty((), dtype=dtype).element_size() if dtype is not None else None
    total = 0
    for info in safetensors_header(path).values():
        numel = 1
        for dim in info["shape"]:
            numel *= int(dim)
        stored = _TYPE_BYTES.get(info["dtype"], 4)
        total += numel * (size if size is not None and info["dtype"] in _FLOAT_TYPES else stored)
    return total


def estimate_weight_bytes(path: str | Path, dtype: torch.dtype | None = None) -> int | None:
    """Loaded size of the weights under ``path`` (a file or a folder), or None when it holds no
    readable safetensors file (pickled checkpoints would have to be loaded to be measured)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    files = [f for f in files if f.suffix == ".safetensors" and ".cache" not in f.parts]
    if not files:
        return None
    groups: dict[tuple[Path, str], dict[str, int]] = {}
    for file in files:
        variant = _VARIANT.search(file.name)
        base = _SHARD.sub("", _VARIANT.sub("", file.name))
        try:
            size = file_bytes_in(file, dtype)
        except (OSError, ValueError, struct.error, KeyError):
            continue
        slot = groups.setdefault((file.parent, base), {})
        key = variant.group(1) if variant else ""
        slot[key] = slot.get(key, 0) + size
    if not groups:
        return None
    return sum(max(sizes.values()) for sizes in groups.values())
