"""Garment try-on: CatVTON dresses the person in a garment photo, or in a garment described in words."""

from .models import model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

TRY_ON = Tool(
    name="try_on",
    node_id=f"{NODE_PREFIX}TryOn",
    display_name="Try On (CatVTON)",
    category=f"{CATEGORY_ROOT}/tryon",
    description=("Dresses the person in a garment with CatVTON (no DensePose, no detectron2): the clothes to replace "
                 "are found by cloth_type (or a phrase, or a connected mask) with grounding + SAM-2; the garment is "
                 "a picture, or is generated from garment_description with SDXL when no picture is connected. "
                 "Works at 1024x768 on the centred crop of the photo and pastes the result back; the person outside "
                 "the clothes stays untouched."),
    args=(
        Arg("image", "image", "The photo of the person to dress."),
        Arg("cloth_type", "choice", "Which clothes to replace: 'upper' (shirt, top, jacket), 'lower' (trousers, "
            "skirt, shorts) or 'overall' (the whole outfit, a dress).", default="upper",
            choices=("upper", "lower", "overall")),
        Arg("garment_description", "string", "The garment in words, used only when no garment image is connected: "
            "SDXL makes a picture of it first ('a navy wool coat with brass buttons').", default="", multiline=True),
        Arg("mask_phrase", "string", "Optional: the clothes to replace in your own words (used instead of "
            "cloth_type when no mask is connected).", default=""),
        Arg("attention", "choice", "CatVTON attention weights in models/catvton (zhengchong/CatVTON, CC BY-NC-SA "
            "4.0): mix-48k-1024 (1024x768) or the 512x384 vitonhd / dresscode ones.",
            default="CatVTON-mix-48k-1024", choices=model_choices("catvton_loader", "catvton"), agent=False),
        Arg("base_unet", "choice", "SD-1.5 inpainting UNet in models/diffusers (only its unet/ is used).",
            default="stable-diffusion-inpainting-unet", choices=model_choices("catvton_loader", "catvton_unet"),
            agent=False),
        Arg("vae", "choice", "VAE folder in models/vae (stabilityai/sd-vae-ft-mse).", default="sd-vae-ft-mse",
            choices=model_choices("catvton_loader", "catvton_vae"), agent=False),
        Arg("steps", "int", "DDIM steps (the paper: 50).", default=50, minimum=1, maximum=200, agent=False),
        Arg("guidance", "float", "Guidance scale (the paper: 2.5; higher saturates colours).", default=2.5,
            minimum=0.0, maximum=20.0, step=0.1, agent=False),
        Arg("seed", "int", "Random seed; batch item i uses seed + i.", default=0, minimum=0, maximum=2**63 - 1,
            agent=False),
        Arg("width", "int", "Working width, a multiple of 8 (0: the weights' own, 768 for mix-48k-1024).",
            default=0, minimum=0, maximum=4096, step=8, agent=False),
        Arg("height", "int", "Working height, a multiple of 8 (0: the weights' own, 1024 for mix-48k-1024).",
            default=0, minimum=0, maximum=4096, step=8, agent=False),
        Arg("repaint", "bool", "Keep the original pixels outside the clothes mask (feathered); off shows the "
            "model's whole frame.", default=True, agent=False),
        Arg("feather", "float", "Soft edge of the repaint, in pixels.", default=8.0, minimum=0.0, maximum=256.0,
            step=1.0, agent=False),
        Arg("grounding_model", "choice", "Grounding model in models/LLM that finds the clothes (no mask connected).",
            default="VisionReasoner-7B", choices=model_choices("grounding", "qwen2_5_vl"), agent=False),
        Arg("sam_model", "choice", "SAM-2 model in models/sam2 that outlines them.", default="sam2.1-hiera-large",
            choices=model_choices("segment", "sam2"), agent=False),
        Arg("garment_model", "choice", "SDXL text-to-image model in models/diffusers for described garments.",
            default="stable-diffusion-xl-base-1.0", choices=model_choices("garment_gen", "sdxl_text_to_image"),
            agent=False),
        Arg("garment", "image", "The garment picture (a shop photo or a cut-out; transparency counts as white).",
            optional=True),
        Arg("mask", "mask", "The clothes to replace (white); without it they are found from cloth_type.",
            optional=True),
    ),
    outputs=(
        Out("image", "image", "The person wearing the garment, at the photo's size."),
        Out("mask", "mask", "Where new pixels went (the clothes mask with its soft edge)."),
        Out("garment", "image", "The garment as the model saw it (the generated one when described)."),
        Out("note", "string", "What ran: weights, steps, working size and crop, how the mask was found."),
    ),
    search_aliases=("catvton", "virtual try-on", "vton", "outfit", "clothes swap", "dress"),
)

TOOLS = (TRY_ON,)
