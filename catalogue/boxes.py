"""Box tools: see boxes and points over the image, and make boxes by hand. No model weights; the
work is done by ``engines/box_render.py`` and ``engines/box_input.py``."""

from __future__ import annotations

from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

CATEGORY = f"{CATEGORY_ROOT}/boxes"

# Largest coordinate a widget offers: core's MAX_RESOLUTION (no image is wider than this).
MAX_PIXELS = 16384

RENDER_BOXES = Tool(
    name="render_boxes",
    node_id=f"{NODE_PREFIX}RenderBoxes",
    display_name="Render Boxes",
    category=CATEGORY,
    description=(
        "Draw boxes and points over the image to check what grounding found: each label in its own "
        "colour, its label and score on a tab at the box's corner; positive points green, negative "
        "points red. Only the marks change the image."),
    args=(
        Arg("image", "image", "The image to draw on."),
        Arg("line_width", "int", "Outline width in pixels; 0 picks one from the image size.",
            default=0, minimum=0, maximum=256, step=1),
        Arg("show_labels", "bool", "Write each box's label on its tab.", default=True),
        Arg("show_scores", "bool", "Write each box's score (0..1) on its tab, when it has one.",
            default=True),
        # Optional inputs last: ComfyUI lists required inputs before optional ones.
        Arg("boxes", "boxes", "Boxes in pixels ({x, y, width, height}, optional label and score), one "
                              "list per image or one list for every image.",
            optional=True),
        Arg("positive_points", "points", "Points as JSON [{\"x\": .., \"y\": ..}, ...] in pixels, drawn "
                                         "as green dots (core SAM3's positive_coords).",
            optional=True),
        Arg("negative_points", "points", "Points as JSON [{\"x\": .., \"y\": ..}, ...] in pixels, drawn "
                                         "as red dots (core SAM3's negative_coords).",
            optional=True),
    ),
    outputs=(Out("image", "image", "The image with the boxes and points drawn over it."),),
    search_aliases=("draw boxes", "draw bboxes", "visualize boxes", "preview detections", "show points"),
)

MAKE_BOXES = Tool(
    name="make_boxes",
    node_id=f"{NODE_PREFIX}MakeBoxes",
    display_name="Make Boxes",
    category=CATEGORY,
    description=(
        "Make boxes and points by hand, for any node that takes boxes (core's BOUNDING_BOX) or SAM3 "
        "points. 'boxes_json' takes one or more boxes as {\"x\", \"y\", \"width\", \"height\"}, "
        "{\"x1\", \"y1\", \"x2\", \"y2\"}, {\"bbox_2d\": [x1, y1, x2, y2]} or [x1, y1, x2, y2], a list of "
        "them (every image) or a list of lists (one per image); when it is blank, the x, y, width and "
        "height widgets make one box. All in pixels."),
    args=(
        Arg("boxes_json", "string", "Boxes as JSON (see the node description); leave blank to use the "
                                    "x, y, width and height widgets.",
            default="", multiline=True),
        Arg("x", "int", "Left edge of the box in pixels (when boxes_json is blank).",
            default=0, minimum=0, maximum=MAX_PIXELS, step=1),
        Arg("y", "int", "Top edge of the box in pixels (when boxes_json is blank).",
            default=0, minimum=0, maximum=MAX_PIXELS, step=1),
        Arg("width", "int", "Width of the box in pixels (when boxes_json is blank).",
            default=512, minimum=1, maximum=MAX_PIXELS, step=1),
        Arg("height", "int", "Height of the box in pixels (when boxes_json is blank).",
            default=512, minimum=1, maximum=MAX_PIXELS, step=1),
        Arg("label", "string", "Label given to every box that has none (blank: no label).", default=""),
        Arg("positive_points", "string", "Points to include, as JSON [{\"x\": .., \"y\": ..}, ...] or "
                                         "[[x, y], ...] in pixels (blank: none).",
            default="", multiline=True),
        Arg("negative_points", "string", "Points to exclude, as JSON [{\"x\": .., \"y\": ..}, ...] or "
                                         "[[x, y], ...] in pixels (blank: none).",
            default="", multiline=True),
    ),
    outputs=(
        Out("boxes", "boxes", "The boxes (core's BOUNDING_BOX: one list per image, or one list for "
                              "every image)."),
        Out("positive_points", "points", "The positive points as JSON [{\"x\", \"y\"}, ...] (core SAM3's "
                                         "positive_coords)."),
        Out("negative_points", "points", "The negative points as JSON (core SAM3's negative_coords)."),
    ),
    search_aliases=("bounding box", "bbox", "manual box", "points", "coordinates"),
)

TOOLS = (RENDER_BOXES, MAKE_BOXES)
