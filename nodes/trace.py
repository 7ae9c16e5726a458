"""Record and trace nodes: every agent step's output lands in the run folder (agent/trace.py)."""

from __future__ import annotations

import json

import folder_paths
from comfy_api.latest import io

from ..agent.trace import record_step, run_dir, write_trace
from ..catalogue.trace import RECORD_STEP, WRITE_TRACE
from ..engines.geometry import boxes_per_image, boxes_to_wire
from .convert import image_batch_to_arrays
from .schema import tool_schema


def _run_folder(run_id: str):
    return run_dir(folder_paths.get_output_directory(), run_id)


def _ui_images(folder, names: list[str]) -> dict:
    subfolder = folder.relative_to(folder_paths.get_output_directory()).as_posix()
    return {"images": [{"filename": n, "subfolder": subfolder, "type": "output"} for n in names]}


class RecordStep(io.ComfyNode):
    TOOL = RECORD_STEP

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL, is_output_node=True)

    @classmethod
    def execute(cls, run_id, step, tool, args_json, after=None, image=None, mask=None, boxes=None,
                text=None) -> io.NodeOutput:
        folder = _run_folder(run_id)
        images = image_batch_to_arrays(image) if image is not None else None
        masks = None
        if mask is not None:
            data = mask if mask.ndim == 3 else mask.unsqueeze(0)
            masks = list(data.detach().cpu().float().clamp(0, 1).numpy())
        wire = boxes_to_wire(boxes_per_image(boxes, len(images) if images else 1)) if boxes is not None else None
        record = record_step(folder, step, tool, json.loads(args_json or "{}"), images=images, masks=masks,
                             boxes=wire, text=text)
        shown = record["files"].get("image", []) + record["files"].get("mask", [])
        return io.NodeOutput(step, ui=_ui_images(folder, shown) if shown else None)


class WriteTrace(io.ComfyNode):
    TOOL = WRITE_TRACE

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL, is_output_node=True)

    @classmethod
    def execute(cls, run_id, image, last_record=None) -> io.NodeOutput:
        folder = _run_folder(run_id)
        record = record_step(folder, "result", "result", {}, images=image_batch_to_arrays(image))
        write_trace(folder, record["files"]["image"])
        return io.NodeOutput(str(folder / "trace.json"), ui=_ui_images(folder, record["files"]["image"]))


NODES = [RecordStep, WriteTrace]
