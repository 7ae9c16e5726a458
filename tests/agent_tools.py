"""A small tool catalogue for the agent tests, in the shapes of the real tools (some of which are still
being written), so the planner and validator tests do not depend on which tools exist today.

Every ``choices`` callable here fails the test if called: agent code must never call one (it would
import engines and list model folders).
"""

from __future__ import annotations

from agentic_edit.catalogue.spec import Arg, Out, Tool


def _never_called():
    raise AssertionError("agent code called a catalogue choices callable")


def _tool(name, args, outputs, agent=True):
    return Tool(name=name, node_id=f"AgenticEditTest{name.title().replace('_', '')}", display_name=name,
                category="agentic_edit/test", description=f"The {name.replace('_', ' ')} tool.",
                args=tuple(args), outputs=tuple(outputs), agent=agent)


IMAGE = Arg("image", "image", "The image.")
MASK = Arg("mask", "mask", "The mask.")
MODEL = Arg("model", "choice", "Model.", default="tiny", choices=_never_called, agent=False)
STRENGTH = Arg("strength", "float", "How strongly.", default=1.0, minimum=0.0, maximum=1.0, step=0.05)
OUT_IMAGE = Out("image", "image", "The result.")
OUT_MASK = Out("mask", "mask", "The mask.")
OUT_BOXES = Out("boxes", "boxes", "The boxes.")

CURRENT = (
    _tool("ground", [IMAGE, Arg("query", "string", "What to find.", default=""), MODEL,
                     Arg("max_objects", "int", "At most.", default=0, minimum=0, maximum=100),
                     Arg("if_nothing_found", "choice", "When none.", default="error", choices=("error", "empty"))],
          [OUT_BOXES, Out("points", "points", "Points."), Out("found", "bool", "Found."),
           Out("answer", "string", "Answer.")]),
    _tool("segment_by_text", [IMAGE, Arg("query", "string", "What to segment.", default=""), MODEL],
          [OUT_MASK, OUT_BOXES]),
    _tool("segment", [IMAGE, MODEL, Arg("boxes", "boxes", "Boxes.", optional=True),
                      Arg("points", "points", "Points.", optional=True)], [OUT_MASK, OUT_BOXES]),
    _tool("inpaint", [IMAGE, MASK, Arg("prompt", "string", "What to paint.", default=""),
                      Arg("negative_prompt", "string", "What not to paint.", default=""), STRENGTH,
                      Arg("steps", "int", "Steps.", default=30, minimum=1, maximum=150),
                      Arg("seed", "int", "Seed.", default=0, minimum=0, maximum=2**32 - 1), MODEL],
          [OUT_IMAGE]),
    _tool("remove_object", [IMAGE, MASK, MODEL], [OUT_IMAGE]),
    _tool("reference_inpaint", [IMAGE, MASK, Arg("reference", "image", "The reference image."),
                                Arg("prompt", "string", "What to paint.", default=""), STRENGTH], [OUT_IMAGE]),
    _tool("write_prompts", [IMAGE, MASK, Arg("instruction", "string", "The edit.", default="")],
          [Out("positive", "string", "Positive."), Out("negative", "string", "Negative.")]),
    _tool("recolor", [IMAGE, MASK, Arg("color", "color", "Colour.", default="red"), STRENGTH], [OUT_IMAGE]),
    _tool("place_region", [IMAGE, Arg("position", "choice", "Where.", default="top",
                                      choices=("top", "bottom", "left", "right", "center", "top left",
                                               "top right", "bottom left", "bottom right")),
                           Arg("size", "float", "Size.", default=0.2, minimum=0.01, maximum=1.0)], [OUT_BOXES]),
    _tool("draw_text", [IMAGE, Arg("text", "string", "Text.", default=""),
                        Arg("color", "color", "Colour.", default="auto"),
                        Arg("align", "choice", "Align.", default="center", choices=("left", "center", "right")),
                        Arg("font", "choice", "Font.", default="DejaVuSans", choices=_never_called, agent=False),
                        Arg("boxes", "boxes", "Boxes.", optional=True), Arg("mask", "mask", "Mask.", optional=True)],
          [OUT_IMAGE, OUT_MASK]),
    _tool("replace_text", [IMAGE, Arg("boxes", "boxes", "Where the old text is."),
                           Arg("text", "string", "The new text.", default=""),
                           Arg("match_color", "bool", "Match colour.", default=True), MODEL],
          [OUT_IMAGE, OUT_MASK]),
    _tool("render_boxes", [IMAGE, Arg("line_width", "int", "Width.", default=0, minimum=0, maximum=256),
                           Arg("show_labels", "bool", "Labels.", default=True),
                           Arg("boxes", "boxes", "Boxes.", optional=True)], [OUT_IMAGE]),
    _tool("refine_mask", [MASK, Arg("grow", "int", "Grow.", default=0, minimum=-64, maximum=64)], [OUT_MASK]),
    _tool("combine_masks", [Arg("mask_a", "mask", "A."), Arg("mask_b", "mask", "B."),
                            Arg("operation", "choice", "Op.", default="union",
                                choices=("union", "intersect", "subtract"))], [OUT_MASK]),
    _tool("invert_mask", [MASK], [OUT_MASK]),
    _tool("make_grid", [IMAGE, Arg("columns", "int", "Columns (no default).", minimum=1, maximum=8)], [OUT_IMAGE]),
    _tool("debug_dump", [IMAGE], [OUT_IMAGE], agent=False),
)

# Tools of later issues, in the shapes the offline planner fills by argument role.
FUTURE = (
    _tool("insert_object", [IMAGE, Arg("prompt", "string", "What to add, where.", default=""),
                            Arg("subject", "string", "The added object.", default=""), MODEL,
                            Arg("mask", "mask", "Where to add it (optional).", optional=True)], [OUT_IMAGE]),
    _tool("try_on", [Arg("person", "image", "The person."), Arg("garment", "image", "The garment."),
                     Arg("cloth_type", "choice", "Which clothes.", default="upper",
                         choices=("upper", "lower", "overall")), MODEL], [OUT_IMAGE]),
)


def sample_catalogue(future: bool = False) -> list[Tool]:
    """The tools above; ``future`` adds insert_object and try_on."""
    return list(CURRENT + (FUTURE if future else ()))


def without(tools, *names) -> list[Tool]:
    return [t for t in tools if t.name not in names]
