"""Tiny Qwen2.5-VL checkpoints (``Qwen2_5_VLForConditionalGeneration`` + processor).

The real architecture with every width shrunk (recipe: shared/research/engines.md section 10): a
2-layer text model of width 32 with multimodal RoPE, a 2-block vision tower (patch 14, merge 2,
temporal patch 2, one windowed and one full-attention block). The processor is a real
``Qwen2_5_VLProcessor``: a byte-level BPE tokenizer built here with the ``tokenizers`` library (the
256-byte alphabet plus Qwen's special tokens, so any text round-trips), a chat template in Qwen's
format, ``Qwen2VLImageProcessor`` with small pixel limits and the ``Qwen2VLVideoProcessor`` the
processor requires even for still images.

Saved with ``save_pretrained`` into ``<root>/LLM/<name>/`` (``config.json``,
``model.safetensors``, ``generation_config.json``, tokenizer and processor files), the layout of
the official ``Qwen/Qwen2.5-VL-*-Instruct`` repositories, under the real names the saved workflows
use:

* ``Qwen2.5-VL-7B-Instruct``: random weights; its greedy answers are garbage that names no box,
  which the engine must survive ("nothing found").
* ``VisionReasoner-7B``: text width 64, trained at build time (``_train_grounding.py``, 250 AdamW
  steps on one CPU thread) to answer every VisionReasoner request with one box over the middle half
  of the image and its centre, so that workflows downstream of grounding have something to work on.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyModel

# Qwen2.5-VL's special tokens, in the official vocabulary's order (ids follow the byte alphabet here).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# Qwen's chat format: a default system turn, image parts as vision_start/image_pad/vision_end.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Pixel limits of the tiny processor: 4..64 merged 28x28 tokens, so an image costs at most 64 tokens.
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 64 * 28 * 28

# Width 32 does not memorise the 107-token answer (loss stalls near 0.1); 64 does.
ANSWERING_WIDTH = 64
# The least lead of every answer token over the runner-up, on unseen inputs, for the checkpoint
# to be written (trained: about 3 to 5).
ANSWER_MARGIN = 1.0
# The training loop is part of this builder's source: the stamp hashes it too (tests/tiny_models/__init__.py).
BUILD_HELPERS = ("._train_grounding",)


def build_tokenizer():
    """A byte-level BPE tokenizer over the 256-byte alphabet (no merges) plus the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]), model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer=None):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = tokenizer or build_tokenizer()
    image_processor = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    video_processor = Qwen2VLVideoProcessor()
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=CHAT_TEMPLATE)


def tiny_config(tokenizer, width: int = 32):
    """The real architecture shrunk: a 2-layer text model ``width`` wide (4 query heads, 2 KV
    heads), a 2-block vision tower whose merger projects to the text width."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    half_head = width // 4 // 2
    text = dict(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        # mrope sections (temporal, height, width) sum to head_dim / 2 (width 32: [1, 1, 2])
        rope_scaling={"type": "mrope", "mrope_section": [half_head // 4, half_head // 4, half_head // 2]},
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=width, patch_size=14,
        spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1],
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def tiny_qwen2_5_vl(seed: int = 0, width: int = 32):
    """A tiny random Qwen2.5-VL model (eval mode) and its processor."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    processor = build_processor()
    tokenizer = processor.tokenizer
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer, width)).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    return model, processor


def save(model, processor, target: Path) -> None:
    model.save_pretrained(target, safe_serialization=True)
    processor.save_pretrained(target)


def build_tiny_qwen2_5_vl(target: Path, seed: int = 0) -> None:
    """Write a tiny random Qwen2.5-VL model and its processor as a ``save_pretrained`` folder."""
    save(*tiny_qwen2_5_vl(seed), target)


def build_answering_vision_reasoner(target: Path, seed: int = 1) -> None:
    """Write a tiny Qwen2.5-VL trained to answer every VisionReasoner request with the middle half
    of the image (``_train_grounding.py``), after checking on images and queries it never saw that
    greedy decoding writes exactly that answer."""
    import numpy as np

    from ._train_grounding import ANSWER, answer_margin, train_to_answer

    model, processor = tiny_qwen2_5_vl(seed, width=ANSWERING_WIDTH)
    losses = train_to_answer(model, processor)
    from skimage import data

    rng = np.random.default_rng(seed)
    unseen = ((data.coffee(), "the cup"),
              (np.full((120, 40, 3), 0.5, np.float32), "It?"),
              (rng.random((33, 77, 3), dtype=np.float32),
               "the word written on the sign above the door of the old shop, left of the bicycle"))
    for image, query in unseen:
        margin = answer_margin(model, processor, image, query)
        if margin < ANSWER_MARGIN:
            height, width = image.shape[:2]
            raise RuntimeError(f"the tiny VisionReasoner did not learn its answer {ANSWER!r}: on an unseen "
                               f"{width}x{height} image and {query!r} its least logit lead is {margin:.2f} "
                               f"(below {ANSWER_MARGIN}; final training loss {losses[-1]:.4f})")
    save(model, processor, target)


def _build_qwen(target: Path) -> None:
    build_tiny_qwen2_5_vl(target, seed=0)



MODELS = [
    TinyModel(name="Qwen2.5-VL-7B-Instruct", folder="LLM", build=_build_qwen,
              description="tiny random Qwen2.5-VL (transformers layout) under the 7B Instruct model's name; "
                          "its greedy answers name no box"),
    TinyModel(name="VisionReasoner-7B", folder="LLM", build=build_answering_vision_reasoner,
              description="tiny Qwen2.5-VL under VisionReasoner-7B's name, trained to answer every request "
                          "with one box over the middle half of the image (and its centre)"),
]
