"""The prompt writer: an MLLM turns an instruction into diffusion prompts for a masked region."""

from .models import model_choices
from .spec import CATEGORY_ROOT, NODE_PREFIX, Arg, Out, Tool

WRITE_PROMPTS = Tool(
    name="write_prompts",
    node_id=f"{NODE_PREFIX}WritePrompts",
    display_name="Write Inpaint Prompts",
    category=f"{CATEGORY_ROOT}/inpaint",
    description=("A vision-language model looks at the image and the mask (drawn as an overlay) and writes the "
                 "positive and negative diffusion prompts that carry out the instruction in that region. Backends: "
                 "any OpenAI-compatible server (key from the environment or the config file, never a widget), the "
                 "local Qwen2.5-VL, or none (the instruction itself, and the output says so)."),
    args=(
        Arg("image", "image", "The image to edit."),
        Arg("mask", "mask", "The region to fill."),
        Arg("instruction", "string", "What should happen in the region ('a glass of water', 'remove the cup').",
            default="", multiline=True),
        Arg("backend", "choice", "Who writes the prompts: 'openai' (any OpenAI-compatible server), 'local' "
            "(Qwen2.5-VL on this machine) or 'none' (use the instruction as the prompt).",
            default="none", choices=("none", "openai", "local"), agent=False),
        Arg("base_url", "string", "OpenAI-compatible server URL (OpenAI, Groq, vLLM, Ollama, LM Studio). The API key "
            "comes from AGENTIC_EDIT_API_KEY or ~/.config/agentic-edit/config.toml, never from here.",
            default="https://api.openai.com/v1", agent=False),
        Arg("model", "string", "Model name on that server.", default="gpt-4o-mini", agent=False),
        Arg("local_model", "choice", "Local vision-language model for backend 'local'.",
            default="Qwen2.5-VL-7B-Instruct", choices=model_choices("grounding", "qwen2_5_vl"), agent=False),
        Arg("temperature", "float", "Sampling temperature of the server model.", default=0.2,
            minimum=0.0, maximum=2.0, step=0.05, agent=False),
    ),
    outputs=(
        Out("positive", "string", "The positive prompt."),
        Out("negative", "string", "The negative prompt."),
        Out("note", "string", "Who wrote the prompts, and why a fallback was used if it was."),
    ),
    search_aliases=("prompt", "caption", "llm", "mllm"),
)

TOOLS = (WRITE_PROMPTS,)
