"""Node definitions in /object_info's shape, read in-process (for exporting a plan as a UI workflow
without an HTTP round trip to our own server)."""

from __future__ import annotations

import sys


def definitions(class_types) -> dict:
    # ComfyUI's top-level ``nodes`` module, loaded before any pack (not this pack's ``nodes``).
    mappings = sys.modules["nodes"].NODE_CLASS_MAPPINGS
    out = {}
    for class_type in set(class_types):
        cls = mappings[class_type]
        if hasattr(cls, "GET_NODE_INFO_V1"):
            out[class_type] = cls.GET_NODE_INFO_V1()
            continue
        inputs = cls.INPUT_TYPES()
        out[class_type] = {"input": inputs, "input_order": {k: list(v) for k, v in inputs.items()},
                           "output": list(cls.RETURN_TYPES),
                           "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))}
    return out
