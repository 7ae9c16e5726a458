"""Segmentation: SAM-2 masks from boxes and points, and 'segment by text' (grounding + SAM-2)."""

from .models import model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

_SAM_MODEL = Arg("sam_model", "choice", "SAM-2 model: a folder or a Meta/ComfyUI checkpoint file in models/sam2, "
                 "a local path or a Hugging Face repo id.", default="sam2.1-hiera-large",
                 choices=model_choices("segment", "sam2"), agent=False)

_REFINE = (
    Arg("grow", "int", "Grow (positive) or shrink (negative) each mask by this many pixels.",
        default=0, minimum=-512, maximum=512),
    Arg("fill_holes", "bool", "Fill holes inside each mask.", default=False),
    Arg("remove_islands_below", "int", "Drop mask islands smaller than this many pixels.",
        default=0, minimum=0, maximum=1_000_000, agent=False),
    Arg("close", "int", "Close gaps narrower than twice this radius (pixels).", default=0, minimum=0,
        maximum=256, agent=False),
    Arg("feather", "float", "Soften the mask edge over this many pixels.", default=0.0, minimum=0.0,
        maximum=256.0, step=0.5),
)

SEGMENT = Tool(
    name="segment",
    node_id=f"{NODE_PREFIX}Segment",
    display_name="Segment (SAM-2)",
    category=f"{CATEGORY_ROOT}/segment",
    description=("SAM-2 masks from boxes and/or points (core BOUNDING_BOX and SAM3-style points, from any node): "
                 "each box is one object, points refine it; one mask per object or their union, with clean-up "
                 "(grow/shrink, fill holes, remove islands, close, feather)."),
    args=(
        Arg("image", "image", "The image to segment."),
        _SAM_MODEL,
        Arg("multimask", "choice", "'auto' lets SAM-2 pick the best of three masks for a lone point; 'always' or "
            "'never' forces it.", default="auto", choices=("auto", "always", "never"), agent=False),
        *_REFINE,
        Arg("boxes", "boxes", "Boxes, one object each.", optional=True),
        Arg("positive_points", "points", "Points on the object(s).", optional=True),
        Arg("negative_points", "points", "Points that are not the object.", optional=True),
    ),
    outputs=(
        Out("mask", "mask", "The union of the objects' masks, one per image."),
        Out("object_masks", "mask", "One mask per object (all images' objects in order)."),
        Out("boxes", "boxes", "The boxes of the segmented objects (their masks' bounds)."),
    ),
    search_aliases=("sam", "sam2", "segment anything", "mask"),
)

SEGMENT_BY_TEXT = Tool(
    name="segment_by_text",
    node_id=f"{NODE_PREFIX}SegmentByText",
    display_name="Segment by Text",
    category=f"{CATEGORY_ROOT}/segment",
    description=("Masks of what a phrase names: the grounding model finds each object's box and an interior point "
                 "(VisionReasoner's recipe), then SAM-2 segments it. Reports an empty result instead of returning "
                 "a silently empty mask."),
    args=(
        Arg("image", "image", "The image to segment."),
        Arg("query", "string", "What to segment: a phrase or an instruction ('the cup nearest the laptop').",
            default="", multiline=True),
        Arg("grounding_model", "choice", "Grounding model in models/LLM (VisionReasoner gives box + point per "
            "object; plain Qwen2.5-VL is asked for both).", default="VisionReasoner-7B",
            choices=model_choices("grounding", "qwen2_5_vl"), agent=False),
        _SAM_MODEL,
        Arg("max_pixels", "int", "Cap on the grounding model's input pixels (Qwen convention).",
            default=1003520, minimum=3136, maximum=12845056, step=784, agent=False),
        Arg("max_objects", "int", "Keep at most this many objects (0: all).", default=0, minimum=0, maximum=100),
        Arg("if_nothing_found", "choice", "'error' stops with a clear message; 'empty' returns an empty mask and "
            "found = false.", default="error", choices=("error", "empty")),
        *_REFINE,
    ),
    outputs=(
        Out("mask", "mask", "The union of the objects' masks, one per image."),
        Out("boxes", "boxes", "The objects' boxes, labelled."),
        Out("found", "bool", "True when every image had a match."),
    ),
    search_aliases=("text segment", "grounded sam", "segment by phrase", "lang sam"),
)

TOOLS = (SEGMENT, SEGMENT_BY_TEXT)
