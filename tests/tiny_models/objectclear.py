"""Tiny random-weight ObjectClear checkpoint in the layout of ``jixin0101/ObjectClear``.

The real repository is a diffusers SDXL-inpainting folder (unet, vae, text_encoder, text_encoder_2,
tokenizer, tokenizer_2, scheduler, model_index.json) plus two custom parts:

* ``image_prompt_encoder/``: a whole ``CLIPModel`` (``save_pretrained``: config.json +
  model.safetensors) of which only the vision tower and its projection are used;
* ``postfuse_module/model.safetensors``: the post-fuse MLP's state dict, no config (its widths are
  read from the tensor shapes): ``mlp1.{layernorm,fc1,fc2}``, ``mlp2.{layernorm,fc1,fc2}``,
  ``layer_norm``. Real widths: CLIP projection 768 -> 2048 (SDXL's 768 + 1280 text widths).

Every component here is the tiny SDXL-inpainting one (``tests/tiny_models/sdxl_inpaint.py``) except
the tokenizers, whose vocabulary also holds the words of the fixed prompt "remove the instance of
object" with merges that build them, so "object" is one token at index 5 exactly as with the real
CLIP tokenizer. Like the real repository, the custom parts also come as ``*.fp16.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import TinyModel
from .sd_inpaint import _tiny_vocab, tiny_text_config
from .sdxl_inpaint import CROSS_ATTENTION_DIM, build_sdxl_inpaint_folder

PROMPT_WORDS = ("remove", "the", "instance", "of", "object")
OBJECT_PROJECTION = 16          # the tiny CLIP vision projection (ViT-L/14's is 768)
POSTFUSE_FILE = "model.safetensors"
POSTFUSE_FP16_FILE = "model.fp16.safetensors"


def _word_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The letter vocabulary plus each prompt word, and the BPE merges that join its letters left to
    right ("o b", "ob j", ..., "objec t</w>")."""
    vocab = dict(_tiny_vocab())
    merges: list[str] = []
    for word in PROMPT_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for piece in pieces[1:]:
            merge = f"{left} {piece}"
            if merge not in merges:
                merges.append(merge)
            left += piece
            vocab.setdefault(left, len(vocab))
    return vocab, merges


def write_word_tokenizer(folder: Path) -> int:
    """CLIP tokenizer files (vocab.json + merges.txt) that know the prompt's words; returns the vocab size."""
    vocab, merges = _word_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    for name in folder.iterdir():
        name.unlink()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}))
    return len(vocab)


def tiny_image_prompt_encoder(seed: int = 5):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": 64, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0,
                     "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=OBJECT_PROJECTION)
    return CLIPModel(config).eval()


def postfuse_state_dict(image_width: int = OBJECT_PROJECTION, text_width: int = CROSS_ATTENTION_DIM,
                        seed: int = 6) -> dict:
    """Random post-fuse weights under the real module's names."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def linear(prefix, fan_in, fan_out):
        scale = fan_in ** -0.5
        return {f"{prefix}.weight": torch.randn(fan_out, fan_in, generator=generator) * scale,
                f"{prefix}.bias": torch.randn(fan_out, generator=generator) * 0.02}

    def norm(prefix, width):
        return {f"{prefix}.weight": 1 + 0.1 * torch.randn(width, generator=generator),
                f"{prefix}.bias": 0.1 * torch.randn(width, generator=generator)}

    state = {}
    state.update(norm("mlp1.layernorm", image_width))
    state.update(linear("mlp1.fc1", image_width, text_width))
    state.update(linear("mlp1.fc2", text_width, text_width))
    state.update(norm("mlp2.layernorm", text_width))
    state.update(linear("mlp2.fc1", text_width, text_width))
    state.update(linear("mlp2.fc2", text_width, text_width))
    state.update(norm("layer_norm", text_width))
    return state


def _replace_text_encoder(folder: Path, vocab_size: int, projection: bool, seed: int) -> None:
    import shutil

    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = tiny_text_config(projection=projection)
    config.vocab_size = vocab_size
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True)


def build_objectclear_folder(target: Path, seed: int = 7) -> None:
    import torch
    from safetensors.torch import save_file

    build_sdxl_inpaint_folder(target, seed=seed)
    vocab_size = write_word_tokenizer(target / "tokenizer")
    write_word_tokenizer(target / "tokenizer_2")
    _replace_text_encoder(target / "text_encoder", vocab_size, projection=False, seed=seed + 1)
    _replace_text_encoder(target / "text_encoder_2", vocab_size, projection=True, seed=seed + 2)

    encoder = tiny_image_prompt_encoder()
    encoder.save_pretrained(target / "image_prompt_encoder", safe_serialization=True)
    encoder.half().save_pretrained(target / "image_prompt_encoder", safe_serialization=True, variant="fp16")

    postfuse = target / "postfuse_module"
    postfuse.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in postfuse_state_dict().items()}
    save_file(state, str(postfuse / POSTFUSE_FILE))
    save_file({k: v.to(torch.float16) for k, v in state.items()}, str(postfuse / POSTFUSE_FP16_FILE))

    index_path = target / "model_index.json"
    index = json.loads(index_path.read_text())
    index.update({"_class_name": "ObjectClearPipeline", "image_prompt_encoder": ["objectclear", "CLIPImageEncoder"],
                  "postfuse_module": ["objectclear", "PostfuseModule"], "apply_attention_guided_fusion": True})
    index_path.write_text(json.dumps(index, indent=2))


def _build(target: Path) -> None:
    build_objectclear_folder(target)


MODELS = [
    TinyModel(name="ObjectClear", folder="objectclear", build=_build,
              description="tiny random ObjectClear (SDXL inpainting + CLIP object encoder + post-fuse MLP) in "
                          "jixin0101/ObjectClear's layout"),
]
