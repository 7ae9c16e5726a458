"""Mask tools: draw a mask from boxes, clean it up, combine two, invert, preview over the image.

None of these needs model weights; the work is done by ``engines/mask_ops.py``.
"""

from __future__ import annotations

from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

CATEGORY = f"{CATEGORY_ROOT}/mask"

# Largest radius or area a widget offers: core's MAX_RESOLUTION (no image is wider than this).
MAX_PIXELS = 16384

MASK_OUT = Out("mask", "mask", "The resulting mask (1 = selected), one per input item.")

BOXES_TO_MASK = Tool(
    name="boxes_to_mask",
    node_id=f"{NODE_PREFIX}BoxesToMask",
    display_name="Boxes to Mask",
    category=CATEGORY,
    description=(
        "Draw a mask that covers the given boxes, at the image's size. A box with fractional "
        "corners covers every pixel it touches, so the mask never cuts into a detected object."),
    args=(
        Arg("image", "image", "The image the boxes belong to; only its size is used."),
        Arg("boxes", "boxes", "Boxes in pixels ({x, y, width, height}), one list per image or one "
                              "list for every image, e.g. from a detector or the grounding tool."),
    ),
    outputs=(MASK_OUT,),
    search_aliases=("bbox to mask", "box mask", "rectangle mask"),
)

REFINE_MASK = Tool(
    name="refine_mask",
    node_id=f"{NODE_PREFIX}RefineMask",
    display_name="Refine Mask",
    category=CATEGORY,
    description=(
        "Clean up and reshape a mask. Steps run in this order, each skipped at 0/off: remove islands "
        "smaller than 'remove_islands_below' pixels, close gaps up to 'close' pixels, fill holes, "
        "grow (or shrink, when negative) by 'grow' pixels, then feather the edge by 'feather' pixels. "
        "All steps but feather treat the mask as in/out at 0.5 and give a hard-edged mask."),
    args=(
        Arg("mask", "mask", "The mask to refine."),
        Arg("grow", "int", "Pixels to grow the mask by along its whole outline (a round brush); "
                           "negative shrinks it. Grow a few pixels before inpainting so the seam is hidden.",
            default=0, minimum=-MAX_PIXELS, maximum=MAX_PIXELS, step=1),
        Arg("fill_holes", "bool", "Fill regions fully enclosed by the mask (a ring becomes a disk).",
            default=False),
        Arg("remove_islands_below", "int", "Remove separate blobs smaller than this many pixels "
                                           "(0 keeps everything); removes speckles a segmenter left.",
            default=0, minimum=0, maximum=MAX_PIXELS * MAX_PIXELS, step=1),
        Arg("close", "int", "Bridge gaps and notches up to about twice this many pixels wide without "
                            "moving the outline elsewhere (morphological closing); 0 is off.",
            default=0, minimum=0, maximum=MAX_PIXELS, step=1),
        Arg("feather", "float", "Soften the edge over this many pixels on each side (gaussian blur); "
                                "0 keeps a hard edge.",
            default=0.0, minimum=0.0, maximum=float(MAX_PIXELS), step=0.5),
    ),
    outputs=(MASK_OUT,),
    search_aliases=("grow mask", "expand mask", "shrink mask", "feather mask", "fill holes", "clean mask"),
)

COMBINE_MASKS = Tool(
    name="combine_masks",
    node_id=f"{NODE_PREFIX}CombineMasks",
    display_name="Combine Masks",
    category=CATEGORY,
    description=(
        "Combine two masks of the same size: union (in either), intersect (in both) or subtract "
        "(in mask_a but not in mask_b). Soft edges are kept (max, min, a*(1-b))."),
    args=(
        Arg("mask_a", "mask", "The first mask (what is kept by 'subtract')."),
        Arg("mask_b", "mask", "The second mask (what is cut away by 'subtract'); same size as mask_a. "
                              "A single mask is used for every mask of a batch."),
        Arg("operation", "choice", "union: pixels in either mask; intersect: pixels in both; "
                                   "subtract: pixels in mask_a that are not in mask_b.",
            default="union", choices=("union", "intersect", "subtract")),
    ),
    outputs=(MASK_OUT,),
    search_aliases=("mask union", "mask intersection", "subtract mask", "mask boolean"),
)

INVERT_MASK = Tool(
    name="invert_mask",
    node_id=f"{NODE_PREFIX}InvertMask",
    display_name="Invert Mask",
    category=CATEGORY,
    description="Swap selected and unselected: every value v becomes 1 - v (select the background).",
    args=(
        Arg("mask", "mask", "The mask to invert."),
    ),
    outputs=(MASK_OUT,),
    search_aliases=("negate mask", "background mask"),
)

MASK_OVERLAY = Tool(
    name="mask_overlay",
    node_id=f"{NODE_PREFIX}MaskOverlay",
    display_name="Mask Overlay Preview",
    category=CATEGORY,
    description=(
        "Preview a mask on its image: the masked area is tinted with a colour and outlined; pixels "
        "away from the mask are unchanged. For checking a mask, not for the final edit."),
    args=(
        Arg("image", "image", "The image to draw on."),
        Arg("mask", "mask", "The mask to show; same size as the image. One mask is shown on every "
                            "image of a batch, one image under every mask of a batch."),
        Arg("color", "color", "Tint and outline colour: '#ff0000', a name such as 'red', or '255, 0, 0'.",
            default="#ff0000"),
        Arg("opacity", "float", "How strongly the masked area is tinted: 0 leaves it as it is, 1 paints "
                                "it solid.",
            default=0.5, minimum=0.0, maximum=1.0, step=0.05),
        Arg("outline", "int", "Width in pixels of the line drawn just outside the mask's edge; 0 draws none.",
            default=2, minimum=0, maximum=64, step=1, agent=False),
    ),
    outputs=(Out("image", "image", "The image with the mask tinted and outlined."),),
    search_aliases=("preview mask", "show mask", "mask visualize"),
)

TOOLS = (BOXES_TO_MASK, REFINE_MASK, COMBINE_MASKS, INVERT_MASK, MASK_OVERLAY)
