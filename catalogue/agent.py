"""The AgentPlanner node: an instruction becomes a plan of this catalogue's tools, run by ComfyUI;
and the node it expands to check a plan's grounding before the edit goes on."""

from .models import model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

_IMAGE = Arg("image", "image", "The image to edit.")
_INSTRUCTION = Arg("instruction", "string", "What to do, in plain words; several edits may be joined by 'and' / "
                   "'then'.", default="", multiline=True)
# Who plans, and with which models the plan's steps run: the agent node's settings, which its
# continuation node gets too (it may ask the same planner again).
_PLANNER_SETTINGS = (
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
)
_REFERENCE = Arg("reference", "image", "A reference image (a garment, a style, an object to copy).", optional=True)
_OUTPUTS = (
    Out("image", "image", "The edited image."),
    Out("plan", "string", "The plan that ran, as JSON."),
    Out("trace_path", "string", "Path of the run's trace.json (every step's tool, arguments, time, files)."),
)

AGENT_EDIT = Tool(
    name="agent_edit",
    node_id=f"{NODE_PREFIX}AgentPlanner",
    display_name="Agent Edit (plan and run)",
    category=f"{CATEGORY_ROOT}/agent",
    description=("Turns a plain instruction ('remove the cat and write HELLO at the top') into a validated plan of "
                 "this pack's tools, expands it into ComfyUI nodes that ComfyUI runs and caches, and keeps every "
                 "step's output and a trace in output/agentic_edit/runs/<run>/. Planners: 'offline' (rules, no "
                 "model), 'openai' (any OpenAI-compatible server; key from the environment or config file) or "
                 "'local' (Qwen2.5-VL on this machine). With a model planner, the plan's grounding runs first: "
                 "when it finds nothing, the planner is asked once more, told what was not found."),
    args=(_IMAGE, _INSTRUCTION, *_PLANNER_SETTINGS, _REFERENCE,
          Arg("session_id", "string", "Multi-turn memory. Empty: one edit of the image. An id (letters, digits, "
              "'_', '-'): one turn of that session, which starts from the image when the id is new; later turns "
              "edit the session's current image (the image input counts only when it is a picture the session "
              "has not seen), 'it' means what an earlier turn found, and 'undo' / 'go back to turn 2' navigate.",
              default="", optional=True)),
    outputs=_OUTPUTS,
    agent=False,
    search_aliases=("agent", "planner", "instruction", "llm edit"),
)

AGENT_CONTINUE = Tool(
    name="agent_continue",
    node_id=f"{NODE_PREFIX}AgentContinue",
    display_name="Agent Edit: Continue After Grounding",
    category=f"{CATEGORY_ROOT}/agent",
    description=("The second half of a model-planned agent edit (the Agent Edit node adds it; it is rarely wired by "
                 "hand). It runs after the plan's grounding steps, whose 'found' outputs arrive as extra inputs "
                 "named found_<step>: when everything was found it expands the rest of the plan, reusing the "
                 "grounding that already ran; when something was not, it asks the planner once more, saying what "
                 "was not found, records the re-plan in the run folder, and expands the new plan, whose grounding "
                 "then stops the run with a clear message if it finds nothing either."),
    args=(
        _IMAGE,
        _INSTRUCTION,
        Arg("plan", "string", "The plan whose grounding ran, as JSON.", default="{}", multiline=True),
        Arg("run_id", "string", "The run folder's name, under output/agentic_edit/runs/."),
        *_PLANNER_SETTINGS,
        Arg("stage", "string", "The plan's steps that already ran, as JSON {step id: node id}; the rest of the plan "
            "links to those nodes instead of running them again.", default="{}"),
        _REFERENCE,
    ),
    outputs=_OUTPUTS,
    agent=False,
    search_aliases=("agent", "replan", "grounding check"),
)

TOOLS = (AGENT_EDIT, AGENT_CONTINUE)
