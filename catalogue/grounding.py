"""Grounding: which pixels does the instruction mean."""

from .models import model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

GROUND = Tool(
    name="ground",
    node_id=f"{NODE_PREFIX}Ground",
    display_name="Ground Objects (Qwen2.5-VL)",
    category=f"{CATEGORY_ROOT}/grounding",
    description=("Finds what a phrase or a whole instruction refers to ('the cup nearest the laptop', "
                 "'the man on the left') with Qwen2.5-VL or VisionReasoner, and returns one box per object "
                 "(core BOUNDING_BOX, with label) and interior points (SAM3's point convention), "
                 "in the original image's pixels."),
    args=(
        Arg("image", "image", "The image to search."),
        Arg("query", "string", "What to find: a phrase or an instruction that names the object(s).",
            default="", multiline=True),
        Arg("grounding_model", "choice", "Grounding model: a folder in models/LLM, a local path or a Hugging Face repo id. "
            "VisionReasoner reasons before answering and gives an interior point per object.",
            default="Qwen2.5-VL-7B-Instruct", choices=model_choices("grounding", "qwen2_5_vl"), agent=False),
        Arg("mode", "choice", "Output convention: 'auto' follows the model; 'qwen' (boxes on the model's resized "
            "input) or 'vision_reasoner' (think, then boxes and points on an 840x840 squash).",
            default="auto", choices=("auto", "qwen", "vision_reasoner"), agent=False),
        Arg("max_pixels", "int", "Cap on the model's input pixels (Qwen convention): large photos are scaled down "
            "to this many pixels, which bounds memory and time; boxes are mapped back to full size.",
            default=1003520, minimum=3136, maximum=12845056, step=784, agent=False),
        Arg("max_objects", "int", "Keep at most this many objects (0: all the model found).",
            default=0, minimum=0, maximum=100),
        Arg("if_nothing_found", "choice", "When nothing matches: 'error' stops the workflow with a clear message; "
            "'empty' returns no boxes (and found = false) so the graph can go on.",
            default="error", choices=("error", "empty")),
        Arg("max_new_tokens", "int", "Longest answer the model may write (VisionReasoner thinks first).",
            default=1024, minimum=16, maximum=4096, agent=False),
    ),
    outputs=(
        Out("boxes", "boxes", "One list of boxes per image, with labels (core BOUNDING_BOX)."),
        Out("points", "points", "Interior points of the objects as JSON [{\"x\", \"y\"}] (a list per image for a "
            "batch), for SAM-2 or core's SAM3 positive_coords."),
        Out("found", "bool", "True when every image had at least one match."),
        Out("answer", "string", "The model's raw answer (with its reasoning, for VisionReasoner)."),
    ),
    search_aliases=("grounding", "detect", "locate", "qwen", "visionreasoner", "bbox"),
)

TOOLS = (GROUND,)
