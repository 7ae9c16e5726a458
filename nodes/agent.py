"""The AgentPlanner node: instruction -> validated plan -> the plan's nodes, expanded in place.

ComfyUI itself runs the expanded steps (each one cached, each one with its progress), a record
node after every step keeps its outputs in the run folder, and a trace node writes trace.json.
"""

from __future__ import annotations

import json
import logging

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
        compiled = compile_plan(plan, all_tools(), run_id=run_id,
                                settings={"grounding_model": grounding_model, "sam_model": sam_model})
        sources = {"image": image, "reference": reference}
        graph = compiled.bind(lambda name: sources[name])
        expanded, (output, trace) = add_graph_prefix(graph, (compiled.output, ["trace", 0]),
                                                     GraphBuilder.alloc_prefix())
        log.info("agent: %s planned %s -> run %s", planner_name, plan.tool_names, run_id)
        return io.NodeOutput(output, plan.to_json(indent=1), trace, expand=expanded)


NODES = [AgentPlanner]
