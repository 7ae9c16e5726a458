"""Websocket events of the pack for its web panel (``web/``), sent to the client that queued the prompt.

``agentic_edit.plan``: an Agent Edit node planned its run; the node on the canvas shows the plan while
the steps run (each step's image comes with ComfyUI's own ``executed`` event of its record node, whose
``display_node`` is the agent node). Sending never fails a run: without a server nothing is sent.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

PLAN_EVENT = "agentic_edit.plan"


def plan_message(run_id: str, instruction: str, plan: dict, planner: str, session_id: str | None = None,
                 prompt_id: str | None = None, node_id: str | None = None) -> dict:
    steps = [{"id": s.get("id"), "tool": s.get("tool"), "args": s.get("args", {}), "inputs": s.get("inputs", {})}
             for s in plan.get("steps", [])]
    return {"run_id": run_id, "instruction": instruction, "planner": planner, "steps": steps,
            "notes": plan.get("notes", ""), "session": session_id, "prompt_id": prompt_id, "node": node_id}


def announce_plan(run_id: str, instruction: str, plan: dict, planner: str, session_id: str | None = None) -> None:
    """Tells the client running this prompt which plan the executing agent node will run."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer

        context = get_executing_context()
        server = PromptServer.instance
        message = plan_message(run_id, instruction, plan, planner, session_id,
                               getattr(context, "prompt_id", None), getattr(context, "node_id", None))
        server.send_sync(PLAN_EVENT, message, server.client_id)
    except Exception as exc:  # a panel that misses the plan must never stop the edit
        log.debug("agentic_edit: plan event not sent (%s)", exc)
