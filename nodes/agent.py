"""The AgentPlanner node: instruction -> validated plan -> the plan's nodes, expanded in place.

ComfyUI itself runs the expanded steps (each one cached, each one with its progress), a record
node after every step keeps its outputs in the run folder, and a trace node writes trace.json.
"""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths
from comfy_api.latest import io
from comfy_execution.graph_utils import GraphBuilder, add_graph_prefix

from ..agent.compile import compile_plan
from ..agent.planners import ImageInfo, PlannerDeclined, get_planner
from ..agent.planners.llm import ChatPlanner
from ..agent.trace import new_run_id, run_dir, write_plan
from ..catalogue import all_tools
from ..catalogue.agent import AGENT_EDIT
from .convert import image_batch_to_arrays
from .schema import tool_schema

log = logging.getLogger(__name__)


class PlanningError(ValueError):
    """The planner declined or failed; the message says why and what to do."""


def _chat_planner(planner: str, base_url: str, model: str, temperature: float, local_model: str) -> ChatPlanner:
    if planner == "openai":
        from ..engines.llm_client import ChatClient

        client = ChatClient(base_url, model, temperature=temperature)
        return ChatPlanner(lambda messages, images, fmt: client.complete(messages, images=images, response_format=fmt),
                           name=f"openai:{model}")
    from ..engines.grounding import GroundingEngine

    engine = GroundingEngine(local_model)
    return ChatPlanner(lambda messages, images, fmt: engine.chat(messages, images=images),
                       name=f"local:{local_model}", structured=False)


def make_plan(instruction: str, image_rgb, planner: str, base_url: str, model: str, temperature: float,
              local_model: str, references: int):
    tools = all_tools()
    info = ImageInfo(width=image_rgb.shape[1], height=image_rgb.shape[0], pixels=image_rgb)
    chosen = (get_planner("offline", tools=tools) if planner == "offline"
              else _chat_planner(planner, base_url, model, temperature, local_model))
    try:
        return chosen.plan(instruction, info, references=references), chosen.name
    except PlannerDeclined as declined:
        raise PlanningError(f"agent ({planner} planner): {declined.reason}") from None


def export_plan_workflows(plan, settings: dict, folder, run_id: str, images: dict) -> None:
    """Write the plan as ordinary workflows beside the trace: ``workflow_api.json`` (for /prompt)
    and ``workflow.json`` (UI format, opens on the canvas). Their LoadImage nodes read copies of
    this run's input images, saved into ComfyUI's input folder."""
    import numpy as np
    from PIL import Image

    from ..agent.compile import export_api_workflow
    from ..agent.trace import write_json_atomic
    from ..agent.workflow_format import api_to_ui
    from .object_info import definitions

    files = {}
    for name, tensor in images.items():
        if tensor is None:
            continue
        files[name] = f"agentic_edit_{run_id}_{name}.png"
        pixels = np.clip(np.rint(tensor[0, ..., :3].cpu().numpy() * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(Path(folder_paths.get_input_directory()) / files[name])
    api = export_api_workflow(plan, all_tools(), files, filename_prefix=f"agentic_edit/{run_id}/replay",
                              settings=settings)
    write_json_atomic(folder / "workflow_api.json", api)
    write_json_atomic(folder / "workflow.json", api_to_ui(api, definitions(n["class_type"] for n in api.values())))


class AgentPlanner(io.ComfyNode):
    TOOL = AGENT_EDIT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL, enable_expand=True)

    @classmethod
    def execute(cls, image, instruction, planner, base_url, model, temperature, local_model, grounding_model,
                sam_model, reference=None) -> io.NodeOutput:
        rgb = image_batch_to_arrays(image)[0]
        plan, planner_name = make_plan(instruction, rgb, planner, base_url, model, temperature, local_model,
                                       references=0 if reference is None else 1)
        run_id = new_run_id("edit")
        folder = run_dir(folder_paths.get_output_directory(), run_id)
        write_plan(folder, instruction, plan.to_dict(), planner_name)
        settings = {"grounding_model": grounding_model, "sam_model": sam_model}
        compiled = compile_plan(plan, all_tools(), run_id=run_id, settings=settings)
        export_plan_workflows(plan, settings, folder, run_id, {"image": image, "reference": reference})
        sources = {"image": image, "reference": reference}
        graph = compiled.bind(lambda name: sources[name])
        expanded, (output, trace) = add_graph_prefix(graph, (compiled.output, ["trace", 0]),
                                                     GraphBuilder.alloc_prefix())
        log.info("agent: %s planned %s -> run %s", planner_name, plan.tool_names, run_id)
        return io.NodeOutput(output, plan.to_json(indent=1), trace, expand=expanded)


NODES = [AgentPlanner]
