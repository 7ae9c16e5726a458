"""Nodes the compiled agent graph uses to keep every step's output on disk (not planner tools)."""

from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

RECORD_STEP = Tool(
    name="record_step",
    node_id=f"{NODE_PREFIX}RecordStep",
    display_name="Record Agent Step",
    category=f"{CATEGORY_ROOT}/agent",
    description=("Saves one agent step's outputs (image, mask, boxes, text) into the run folder under ComfyUI's "
                 "output directory, with a record of the tool and its arguments. The agent adds one after each "
                 "step; it is rarely wired by hand."),
    args=(
        Arg("run_id", "string", "The run folder's name, under output/agentic_edit/runs/."),
        Arg("step", "string", "The step id in the plan (s1, s2, ...)."),
        Arg("tool", "string", "The tool the step ran."),
        Arg("args_json", "string", "The step's arguments as JSON.", default="{}"),
        Arg("after", "string", "The previous record (keeps records in plan order).", optional=True),
        Arg("image", "image", "The step's image output.", optional=True),
        Arg("mask", "mask", "The step's mask output.", optional=True),
        Arg("boxes", "boxes", "The step's boxes output.", optional=True),
        Arg("text", "string", "A text output of the step (a prompt, an answer).", optional=True),
    ),
    outputs=(Out("record", "string", "This record's step id, for the next record or the trace."),),
    agent=False,
)

WRITE_TRACE = Tool(
    name="write_trace",
    node_id=f"{NODE_PREFIX}WriteTrace",
    display_name="Write Agent Trace",
    category=f"{CATEGORY_ROOT}/agent",
    description=("Writes trace.json for an agent run: the instruction, the plan, and every step's tool, "
                 "arguments, time and output files; saves the final image beside them."),
    args=(
        Arg("run_id", "string", "The run folder's name, under output/agentic_edit/runs/."),
        Arg("image", "image", "The run's final image."),
        Arg("last_record", "string", "The last step's record (so the trace is written after every step).",
            optional=True),
    ),
    outputs=(Out("trace_path", "string", "Path of trace.json."),),
    agent=False,
)

TOOLS = (RECORD_STEP, WRITE_TRACE)
