"""Text tools: draw text fitted into boxes (or the regions of a mask; no model weights,
``engines/text_draw.py``), and replace text (removal + drawing, ``engines/text_replace.py``)."""

from __future__ import annotations

import os
import sys

from .models import engine_choices, model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

CATEGORY = f"{CATEGORY_ROOT}/text"

DEFAULT_FONT = "DejaVuSans"  # engines.fonts.DEFAULT_FONT; repeated so the catalogue imports no engine
ALIGNS = ("left", "center", "right")
VALIGNS = ("top", "middle", "bottom")
OVERFLOWS = ("error", "shrink", "clip")
MASK_REGIONS = ("each region", "whole mask")


def font_dirs() -> list[str]:
    """ComfyUI's fonts folders (``models/fonts``) when running inside ComfyUI, else none.

    Read from the ``folder_paths`` module ComfyUI has already loaded, so that the catalogue never
    imports ComfyUI itself (the agent and the MCP server read it outside ComfyUI).
    """
    folder_paths = sys.modules.get("folder_paths")
    if folder_paths is None:
        return []
    try:
        return list(folder_paths.get_folder_paths("fonts"))
    except KeyError:  # the model store registers "fonts" on load; before that, the default place
        return [os.path.join(folder_paths.models_dir, "fonts")]


def font_choices() -> list[str]:
    """The font menu, read each time the node list is built so newly added font files appear."""
    from ..engines.fonts import available_fonts  # light: Pillow and a folder listing

    return available_fonts(font_dirs()) or [DEFAULT_FONT]


DRAW_TEXT = Tool(
    name="draw_text",
    node_id=f"{NODE_PREFIX}DrawText",
    display_name="Draw Text in Boxes",
    category=CATEGORY,
    description=(
        "Write text into boxes of the image, each text at the largest font size that fits its box "
        "(word-wrapped; a word is broken only when it cannot fit whole). Regions come from 'boxes', "
        "or, when no boxes are connected, from 'mask' (one region per separate blob, in reading "
        "order). Only pixels inside the boxes change; the mask output shows which. Use a backing "
        "colour to cover old text before writing new text on a sign."),
    args=(
        Arg("image", "image", "The image to write on."),
        Arg("text", "string", "The text to write. With 'one_line_per_box' on, line 1 goes in the first "
                              "box, line 2 in the second, and so on; otherwise the whole text (line "
                              "breaks kept) goes in every box.",
            default="", multiline=True),
        Arg("one_line_per_box", "bool", "Give each box its own line of 'text' (as many lines as boxes) "
                                        "instead of the same text in every box.",
            default=False),
        Arg("mask_regions", "choice", "With a mask: 'each region' writes in every separate blob (tiny "
                                      "specks ignored); 'whole mask' writes once, in the box around all of it.",
            default="each region", choices=MASK_REGIONS),
        Arg("font", "choice", "Font: the built-in DejaVu family, or any .ttf/.otf/.ttc file put in "
                              "ComfyUI's models/fonts folder (for scripts DejaVu lacks, such as CJK).",
            default=DEFAULT_FONT, choices=font_choices, agent=False),
        Arg("color", "color", "Text colour: 'auto' (black or white, whichever reads better on the box), "
                              "a hex colour such as '#ff0000' ('#ff000080' for half opacity) or a name "
                              "such as 'white'.",
            default="auto"),
        Arg("align", "choice", "Horizontal alignment of the lines inside the box.",
            default="center", choices=ALIGNS),
        Arg("valign", "choice", "Vertical alignment of the text block inside the box.",
            default="middle", choices=VALIGNS),
        Arg("padding", "float", "Space kept clear inside each box edge, as a fraction of the box's "
                                "shorter side.",
            default=0.05, minimum=0.0, maximum=0.45, step=0.01),
        Arg("min_size", "int", "Smallest font size in pixels; text that does not fit at this size is "
                               "handled by 'overflow'.",
            default=8, minimum=1, maximum=4096, step=1),
        Arg("max_size", "int", "Largest font size in pixels; the text never grows beyond it even in a "
                               "big box.",
            default=512, minimum=1, maximum=4096, step=1),
        Arg("line_spacing", "float", "Distance between lines, as a multiple of the font's line height.",
            default=1.15, minimum=0.5, maximum=3.0, step=0.05, agent=False),
        Arg("outline", "float", "Outline around the letters, as a fraction of the font size "
                                "(0 = none; 0.05 is a clear outline).",
            default=0.0, minimum=0.0, maximum=0.3, step=0.01),
        Arg("outline_color", "color", "Outline colour: 'auto' (contrasting with the text colour), a hex "
                                      "colour or a name.",
            default="auto"),
        Arg("backing", "color", "'none', or a colour that first fills each whole box (covering what was "
                                "there), e.g. '#ffffff' to blank a sign before writing on it.",
            default="none"),
        Arg("backing_opacity", "float", "Opacity of the backing colour (1 hides what was under it).",
            default=1.0, minimum=0.0, maximum=1.0, step=0.05),
        Arg("overflow", "choice", "When the text does not fit even at min_size: 'error' stops with a "
                                  "message, 'shrink' goes below min_size, 'clip' draws at min_size and "
                                  "cuts off what does not fit.",
            default="error", choices=OVERFLOWS, agent=False),
        # Optional inputs last: ComfyUI lists required inputs before optional ones.
        Arg("boxes", "boxes", "Where to write, in pixels ({x, y, width, height}), one list per image or "
                              "one list for every image, e.g. from the grounding tool or Make Boxes.",
            optional=True),
        Arg("mask", "mask", "Where to write when no boxes are connected: each separate region of the "
                            "mask (or the whole mask, see 'mask_regions') becomes one box.",
            optional=True),
    ),
    outputs=(
        Out("image", "image", "The image with the text drawn in."),
        Out("mask", "mask", "Which pixels changed and how much (the coverage of text, outline and "
                            "backing), one per image."),
    ),
    search_aliases=("text", "caption", "write text", "sign text", "typography", "add text", "label"),
)

REMOVAL_METHODS = ("auto", "objectclear", "inpaint")  # engines.text_replace.REMOVAL_METHODS

REPLACE_TEXT = Tool(
    name="replace_text",
    node_id=f"{NODE_PREFIX}ReplaceText",
    display_name="Replace Text",
    category=CATEGORY,
    description=(
        "Replace the text in boxes (e.g. a sign found by the grounding tool): the old text is removed (ObjectClear "
        "when installed, else inpainting) and the new text is drawn fitted into every box, in the old text's "
        "colour when 'match_color' is on. One text per box separated by '|' or new lines, or one text for all."),
    args=(
        Arg("image", "image", "The image with the old text."),
        Arg("boxes", "boxes", "Where the old text is, one box per piece of text (from the grounding tool or Make "
                              "Boxes); one list per image or one list for every image."),
        Arg("text", "string", "The new text: one per box separated by '|' or new lines (in the boxes' order), or "
                              "one text for every box.", default="", multiline=True),
        Arg("match_color", "bool", "Draw the new text in the old text's colour (sampled from the original "
                                   "pixels: the dominant colour that stands out from the box's background).",
            default=True),
        Arg("color", "color", "Text colour when 'match_color' is off or finds no text colour: 'auto' (black or "
                              "white, whichever reads better), a hex colour or a name.", default="auto"),
        Arg("removal", "choice", "How the old text is removed: 'auto' (ObjectClear when its weights are "
                                 "installed, else inpainting), 'objectclear' or 'inpaint'.",
            default="auto", choices=REMOVAL_METHODS),
        Arg("font", "choice", "Font (see Draw Text in Boxes).", default=DEFAULT_FONT, choices=font_choices,
            agent=False),
        Arg("padding", "float", "Space kept clear inside each box edge, as a fraction of its shorter side.",
            default=0.08, minimum=0.0, maximum=0.45, step=0.01, agent=False),
        Arg("grow", "float", "Grow the boxes by this many pixels for the removal, so no outline of the old "
                             "letters is left.", default=3.0, minimum=0.0, maximum=64.0, step=1.0, agent=False),
        Arg("inpaint_model", "choice", "Inpainting model for the 'inpaint' removal.",
            default="stable-diffusion-xl-1.0-inpainting-0.1",
            choices=engine_choices("inpaint", "inpaint_model_choices"), agent=False),
        Arg("objectclear_model", "choice", "ObjectClear weights for the 'objectclear' removal.",
            default="ObjectClear", choices=model_choices("objectclear_loader", "objectclear"), agent=False),
        Arg("steps", "int", "Removal denoising steps (0: the model's default).", default=0, minimum=0,
            maximum=200, agent=False),
        Arg("seed", "int", "Random seed of the removal.", default=0, minimum=0, maximum=2**63 - 1, agent=False),
    ),
    outputs=(
        Out("image", "image", "The image with the new text."),
        Out("mask", "mask", "Which pixels changed (the removal and the new letters)."),
        Out("note", "string", "What ran: the removal method and each box's text and colour."),
    ),
    search_aliases=("replace text", "change text", "edit sign", "sign text", "rewrite text", "text swap"),
)

TOOLS = (DRAW_TEXT, REPLACE_TEXT)
