"""Tiny random-weight SAM-2 (transformers ``Sam2Model`` + ``Sam2Processor``) checkpoints.

The architecture is the real one with every width shrunk (recipe: shared/research/engines.md
section 10, with the global-attention block moved one stage down): Hiera trunk of 24 channels in
four stages [1, 2, 2, 1], FPN of 32, prompt encoder and mask decoder of 32 (0.75 M parameters).
The input size stays 1024 (the prompt encoder and decoder assume 64x64 features), so one encoder
pass still costs about a second on a CPU core.

Saved with ``save_pretrained`` into ``<root>/sam2/<name>/``: ``config.json``,
``model.safetensors`` and ``processor_config.json``, the layout of the official
``facebook/sam2.1-hiera-*`` repositories. The saved workflows name the real large model, so the tiny
one is written under that same name.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyModel


def _tiny_config():
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig

    backbone = Sam2HieraDetConfig(
        hidden_size=24,
        num_attention_heads=1,
        blocks_per_stage=[1, 2, 2, 1],
        # One global-attention block, as the real trunks have. It must not be a stage's first
        # (query-pooling) block; in stage 3 (64x64 tokens) it costs a quarter of what it would in
        # stage 2 (128x128), which halves the encoder's time on a CPU.
        global_attention_blocks=[4],
        embed_dim_per_stage=[24, 48, 96, 192],
        num_attention_heads_per_stage=[1, 2, 4, 8],
        window_size_per_stage=[8, 4, 14, 7],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[192, 96, 48, 24],
        fpn_hidden_size=32,
    )
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 32},
        mask_decoder_config={"hidden_size": 32, "num_attention_heads": 2, "mlp_dim": 64,
                             "iou_head_hidden_dim": 32},
    )


def build_tiny_sam2(target: Path, seed: int = 0) -> None:
    """Write a tiny random Sam2Model and its processor as a ``save_pretrained`` folder."""
    import torch
    from transformers import Sam2ImageProcessor, Sam2Model, Sam2Processor

    torch.manual_seed(seed)
    model = Sam2Model(_tiny_config()).eval()
    model.save_pretrained(target, safe_serialization=True)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(target)


def _build_large(target: Path) -> None:
    build_tiny_sam2(target, seed=0)


def _build_tiny(target: Path) -> None:
    build_tiny_sam2(target, seed=1)


MODELS = [
    TinyModel(name="sam2.1-hiera-large", folder="sam2", build=_build_large,
              description="tiny random Sam2Model (transformers layout) under the large model's name"),
    TinyModel(name="sam2.1-hiera-tiny", folder="sam2", build=_build_tiny,
              description="tiny random Sam2Model (transformers layout) under the tiny model's name"),
]
