"""Weight-free edits: named regions and recolouring."""

from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

PLACE_REGION = Tool(
    name="place_region",
    node_id=f"{NODE_PREFIX}PlaceRegion",
    display_name="Place Region",
    category=f"{CATEGORY_ROOT}/boxes",
    description=("A box at a named position of the image ('top', 'bottom left', 'center', ...): where to write "
                 "text or edit when the instruction names a place rather than an object."),
    args=(
        Arg("image", "image", "The image (for its size)."),
        Arg("position", "choice", "Where the region is.", default="top",
            choices=("top", "bottom", "left", "right", "center", "top left", "top right", "bottom left",
                     "bottom right")),
        Arg("size", "float", "How much of the image the region spans across its short direction (a 'top' band "
            "is this fraction of the height).", default=0.2, minimum=0.01, maximum=1.0, step=0.01),
        Arg("margin", "float", "Gap to the image edge, as a fraction of the shorter side.",
            default=0.03, minimum=0.0, maximum=0.45, step=0.01),
    ),
    outputs=(Out("boxes", "boxes", "The region as one box per image, labelled with the position."),),
    search_aliases=("region", "position", "area"),
)

RECOLOR = Tool(
    name="recolor",
    node_id=f"{NODE_PREFIX}Recolor",
    display_name="Recolor",
    category=f"{CATEGORY_ROOT}/edit",
    description=("Turns the masked pixels a colour while keeping their shading (hue and saturation from the "
                 "colour, brightness from the image). Exact and instant; pixels outside the mask are untouched."),
    args=(
        Arg("image", "image", "The image to recolour."),
        Arg("mask", "mask", "Which pixels to recolour (soft edges blend)."),
        Arg("color", "color", "The new colour: a name ('red') or hex ('#c0392b').", default="red"),
        Arg("strength", "float", "0 keeps the original colour, 1 applies the new colour fully.",
            default=1.0, minimum=0.0, maximum=1.0, step=0.05),
    ),
    outputs=(Out("image", "image", "The recoloured image."),),
    search_aliases=("color", "colour", "tint", "hue"),
)

TOOLS = (PLACE_REGION, RECOLOR)
