"""Insertion: add an object to a photo where the prompt says (Add-it on FLUX.1-dev)."""

from .models import engine_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

_CATEGORY = f"{CATEGORY_ROOT}/insert"

INSERT_OBJECT = Tool(
    name="insert_object",
    node_id=f"{NODE_PREFIX}InsertObject",
    display_name="Insert Object (Add-it)",
    category=_CATEGORY,
    description=("Adds an object to the image where the prompt places it, matching the scene's light and "
                 "perspective, without a mask (Add-it, training-free, on FLUX.1-dev). The prompt describes the image "
                 "with the object in it; the subject is the prompt's word for the new object. Also returns the new "
                 "object's mask."),
    args=(
        Arg("image", "image", "The photo to add the object to."),
        Arg("prompt", "string", "The image with the new object, e.g. 'a dog sitting on the sofa'.", default="",
            multiline=True),
        Arg("subject", "string", "The word(s) of the prompt naming the new object, e.g. 'dog'.", default=""),
        Arg("source_prompt", "string", "What the photo shows now (empty: the prompt without the subject).",
            default="", multiline=True),
        Arg("model", "choice", "FLUX.1-dev as a diffusers folder in models/diffusers (gated: accept the licence at "
            "huggingface.co/black-forest-labs/FLUX.1-dev).", default="FLUX.1-dev",
            choices=engine_choices("addit", "flux_model_choices"), agent=False),
        Arg("seed", "int", "Random seed of the new object (vary it if the object does not look right).", default=0,
            minimum=0, maximum=2**63 - 1, agent=False),
        Arg("steps", "int", "Denoising steps (the paper: 30).", default=30, minimum=2, maximum=100, agent=False),
        Arg("guidance", "float", "FLUX guidance of the target (the paper: 3.5).", default=3.5, minimum=0.0,
            maximum=10.0, step=0.1, agent=False),
        Arg("extended_scale", "float", "Gamma: how much the new image follows its prompt rather than the photo "
            "(0: automatic, solved in 1..1.2; raise it if the object does not appear).", default=0.0, minimum=0.0,
            maximum=3.0, step=0.01, agent=False),
        Arg("structure_transfer_step", "int", "Step at which the layout is taken from the photo (the paper: 4 of "
            "30; lower it if the object does not appear).", default=4, minimum=0, maximum=99, agent=False),
        Arg("blend_step", "int", "Step at which everything but the new object is pinned to the photo (the paper: "
            "18 of 30; -1: no blending, the whole image may change).", default=18, minimum=-1, maximum=99,
            agent=False),
        Arg("invert", "bool", "Invert the photo through the model (more faithful background; about as many model "
            "passes again); off: re-noise it.", default=True, agent=False),
        Arg("refine", "choice", "Refine the object's mask with SAM-2 ('auto': when a SAM-2 model is installed).",
            default="auto", choices=engine_choices("addit", "refine_choices"), agent=False),
        Arg("width", "int", "Working width, a multiple of 16 (0: the image's own, scaled to fit 1 megapixel).",
            default=0, minimum=0, maximum=4096, step=16, agent=False),
        Arg("height", "int", "Working height, a multiple of 16 (0: as the image).", default=0, minimum=0,
            maximum=4096, step=16, agent=False),
    ),
    outputs=(
        Out("image", "image", "The photo with the object added (at the input's size)."),
        Out("mask", "mask", "Where the new object is."),
        Out("note", "string", "What ran: sizes, gamma, the derived source prompt, how the mask was found."),
    ),
    search_aliases=("add", "insert", "add-it", "addit", "place object", "flux"),
)

TOOLS = (INSERT_OBJECT,)
