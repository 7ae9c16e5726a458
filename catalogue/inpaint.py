"""Inpainting: fill a masked region (SD-1.5 / PrefPaint / SDXL), with a reference image
(IP-Adapter), and removal."""

from .models import engine_choices, model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

_SCHEDULERS = ("default", "ddim", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "pndm")
_CATEGORY = f"{CATEGORY_ROOT}/inpaint"


def _model(default: str) -> Arg:
    return Arg("model", "choice", "Inpainting model: a diffusers folder in models/diffusers (PrefPaint, SD-1.5 or SDXL "
               "inpainting), an inpainting checkpoint in models/checkpoints, a local path or a Hugging Face repo id.",
               default=default, choices=engine_choices("inpaint", "inpaint_model_choices"), agent=False)


_SAMPLING = (
    Arg("steps", "int", "Denoising steps (0: the model's default: 30 SD-1.5, 25 SDXL, 50 PrefPaint).",
        default=0, minimum=0, maximum=200, agent=False),
    Arg("guidance", "float", "Classifier-free guidance scale (0: the model's default).", default=0.0,
        minimum=0.0, maximum=30.0, step=0.1, agent=False),
    Arg("scheduler", "choice", "Sampler ('default' keeps the model's own; PrefPaint always uses DDIM there).",
        default="default", choices=_SCHEDULERS, agent=False),
    Arg("seed", "int", "Random seed; batch item i uses seed + i.", default=0, minimum=0, maximum=2**63 - 1,
        agent=False),
    Arg("batch", "int", "How many variations to make.", default=1, minimum=1, maximum=16, agent=False),
    Arg("mode", "choice", "'crop' inpaints only a crop around the mask at the model's native size and pastes it "
        "back (fast on large photos); 'full' runs on the whole image.", default="crop", choices=("crop", "full"),
        agent=False),
    Arg("context_margin", "float", "Context around the mask in crop mode, as a fraction of the mask's size.",
        default=0.25, minimum=0.0, maximum=4.0, step=0.05, agent=False),
    Arg("mask_grow", "float", "Grow the mask by this many pixels before inpainting.", default=4.0,
        minimum=0.0, maximum=256.0, step=1.0),
    Arg("feather", "float", "Blend the new pixels over this many pixels outside the grown mask; pixels beyond "
        "it are bit-identical to the input.", default=8.0, minimum=0.0, maximum=256.0, step=1.0, agent=False),
)

INPAINT = Tool(
    name="inpaint",
    node_id=f"{NODE_PREFIX}Inpaint",
    display_name="Inpaint",
    category=_CATEGORY,
    description=("Repaints the masked region from a prompt with PrefPaint / SD-1.5 or SDXL inpainting. Only a crop "
                 "around the mask is processed by default, and every pixel outside the grown, feathered mask is "
                 "returned bit-identical (no colour drift from the VAE round trip)."),
    args=(
        Arg("image", "image", "The image to edit."),
        Arg("mask", "mask", "Where to repaint (white = repaint)."),
        Arg("prompt", "string", "What the region should show.", default="", multiline=True),
        Arg("negative_prompt", "string", "What it should not show.", default="", multiline=True),
        _model("stable-diffusion-xl-1.0-inpainting-0.1"),
        Arg("strength", "float", "How much to change the region (1: repaint fully; 0: unchanged).",
            default=0.99, minimum=0.0, maximum=1.0, step=0.01),
        *_SAMPLING,
    ),
    outputs=(
        Out("image", "image", "The edited image(s)."),
        Out("mask", "mask", "Where the new pixels were pasted (the grown, feathered mask)."),
        Out("note", "string", "What ran, and anything worth knowing (an empty mask returns the image unchanged)."),
    ),
    search_aliases=("inpainting", "fill", "replace", "prefpaint", "sdxl inpaint"),
)

REFERENCE_INPAINT = Tool(
    name="reference_inpaint",
    node_id=f"{NODE_PREFIX}ReferenceInpaint",
    display_name="Reference Inpaint (IP-Adapter)",
    category=_CATEGORY,
    description=("Repaints the masked region so it looks like a reference image (an object, a texture, a style), "
                 "with IP-Adapter on SDXL inpainting; the prompt steers it further."),
    args=(
        Arg("image", "image", "The image to edit."),
        Arg("mask", "mask", "Where to repaint."),
        Arg("reference", "image", "What the region should look like (alpha is composited on white)."),
        Arg("prompt", "string", "Optional words to go with the reference.", default="", multiline=True),
        Arg("negative_prompt", "string", "What it should not show.", default="", multiline=True),
        _model("stable-diffusion-xl-1.0-inpainting-0.1"),
        Arg("ip_adapter", "choice", "IP-Adapter weights in models/ipadapter (h94/IP-Adapter SDXL; the vit-h ones use "
            "the ViT-H image encoder).", default="ip-adapter_sdxl",
            choices=("ip-adapter_sdxl", "ip-adapter_sdxl_vit-h", "ip-adapter-plus_sdxl_vit-h"), agent=False),
        Arg("scale", "float", "How strongly the reference steers (1: image only; ~0.5 with a prompt).",
            default=0.7, minimum=0.0, maximum=2.0, step=0.05),
        Arg("strength", "float", "How much to change the region.", default=0.99, minimum=0.0, maximum=1.0,
            step=0.01),
        *_SAMPLING,
    ),
    outputs=INPAINT.outputs,
    search_aliases=("ip adapter", "ipadapter", "reference", "image prompt"),
)

REMOVE_METHODS = ("auto", "objectclear", "inpaint")

REMOVE_OBJECT = Tool(
    name="remove_object",
    node_id=f"{NODE_PREFIX}RemoveObject",
    display_name="Remove Object",
    category=_CATEGORY,
    description=("Removes what the mask covers and fills it with the surrounding scene. With ObjectClear weights "
                 "(models/objectclear/ObjectClear, non-commercial licence) the object's shadow and reflection go "
                 "too, and 'effect_mask' shows them; otherwise an inpaint prompted for empty background fills a "
                 "grown mask. The 'method' output says which method ran."),
    args=(
        Arg("image", "image", "The image to edit."),
        Arg("mask", "mask", "The object to remove (ObjectClear finds its shadow itself; for the inpaint method "
            "include the shadow if you can)."),
        _model("stable-diffusion-xl-1.0-inpainting-0.1"),
        Arg("grow", "float", "Grow the mask by this many pixels first, so no outline of the object is left.",
            default=12.0, minimum=0.0, maximum=256.0, step=1.0),
        Arg("background_prompt", "string", "What the empty region should look like (inpaint method).",
            default="empty background, seamless natural continuation of the surroundings, nothing there",
            multiline=True, agent=False),
        Arg("negative_prompt", "string", "What must not appear (inpaint method).",
            default="object, person, animal, text, watermark, blurry, artifacts", multiline=True, agent=False),
        *[a for a in _SAMPLING if a.name != "mask_grow"],
        # New inputs go last so workflows saved before them keep their widget order.
        Arg("method", "choice", "'auto': ObjectClear when its weights are installed, else inpaint; 'objectclear': "
            "remove the object with its shadow and reflection (ObjectClear, downloaded once if allowed); "
            "'inpaint': fill the grown mask with the inpainting model. ObjectClear's defaults (steps/guidance 0): 20 "
            "steps, guidance 2.5.", default="auto", choices=REMOVE_METHODS),
        Arg("objectclear_model", "choice", "ObjectClear weights: jixin0101/ObjectClear in models/objectclear "
            "(NTU S-Lab License 1.0, non-commercial), a diffusers folder of that layout, or a path.",
            default="ObjectClear", choices=model_choices("objectclear_loader", "objectclear"), agent=False),
        Arg("resolution", "int", "ObjectClear's working short side in pixels (0: its training size, 512; 768 or "
            "1024 keep more detail on large photos, slower).", default=0, minimum=0, maximum=2048, step=64,
            agent=False),
        Arg("effect_threshold", "float", "ObjectClear: how strongly a pixel must belong to the object or its "
            "effects (attention map, 0..1) to be replaced; lower replaces more.", default=0.5, minimum=0.05,
            maximum=0.95, step=0.05, agent=False),
    ),
    outputs=(
        Out("image", "image", "The image without the object."),
        Out("mask", "mask", "Where pixels were replaced."),
        Out("method", "string", "Which removal method ran, and notes."),
        Out("effect_mask", "mask", "The object with its shadow and reflection as ObjectClear saw them (0..1); for "
            "the inpaint method, the grown mask."),
    ),
    search_aliases=("remove", "erase", "delete", "object removal", "clean up", "objectclear", "shadow removal"),
)

TOOLS = (INPAINT, REFERENCE_INPAINT, REMOVE_OBJECT)
