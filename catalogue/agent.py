"""The AgentPlanner node: an instruction becomes a plan of this catalogue's tools, run by ComfyUI."""

from .models import model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

AGENT_EDIT = Tool(
    name="agent_edit",
    node_id=f"{NODE_PREFIX}AgentPlanner",
    display_name="Agent Edit (plan and run)",
    category=f"{CATEGORY_ROOT}/agent",
    description=("Turns a plain instruction ('remove the cat and write HELLO at the top') into a validated plan of "
                 "this pack's tools, expands it into ComfyUI nodes that ComfyUI runs and caches, and keeps every "
                 "step's output and a trace in output/agentic_edit/runs/<run>/. Planners: 'offline' (rules, no "
                 "model), 'openai' (any OpenAI-compatible server; key from the environment or config file) or "
                 "'local' (Qwen2.5-VL on this machine)."),
    args=(
        Arg("image", "image", "The image to edit."),
        Arg("instruction", "string", "What to do, in plain words; several edits may be joined by 'and' / 'then'.",
            default="", multiline=True),
        Arg("planner", "choice", "Who plans: 'offline' rules (no model needed), an 'openai'-compatible server, or "
            "the 'local' Qwen2.5-VL.", default="offline", choices=("offline", "openai", "local")),
        Arg("base_url", "string", "OpenAI-compatible server URL for planner 'openai'. The API key comes from "
            "AGENTIC_EDIT_API_KEY or ~/.config/agentic-edit/config.toml, never from here.",
            default="https://api.openai.com/v1"),
        Arg("model", "string", "Model name on that server.", default="gpt-4o-mini"),
        Arg("temperature", "float", "Sampling temperature of the planning model.", default=0.0,
            minimum=0.0, maximum=2.0, step=0.05),
        Arg("local_model", "choice", "Local vision-language model for planner 'local'.",
            default="Qwen2.5-VL-7B-Instruct", choices=model_choices("grounding", "qwen2_5_vl")),
        Arg("grounding_model", "choice", "The grounding model every step of the plan uses (VisionReasoner "
            "reasons over relations such as 'the cup nearest the laptop').", default="VisionReasoner-7B",
            choices=model_choices("grounding", "qwen2_5_vl")),
        Arg("sam_model", "choice", "The SAM-2 model every step of the plan uses.", default="sam2.1-hiera-large",
            choices=model_choices("segment", "sam2")),
        Arg("reference", "image", "A reference image (a garment, a style, an object to copy).", optional=True),
    ),
    outputs=(
        Out("image", "image", "The edited image."),
        Out("plan", "string", "The plan that ran, as JSON."),
        Out("trace_path", "string", "Path of the run's trace.json (every step's tool, arguments, time, files)."),
    ),
    agent=False,
    search_aliases=("agent", "planner", "instruction", "llm edit"),
)

TOOLS = (AGENT_EDIT,)
