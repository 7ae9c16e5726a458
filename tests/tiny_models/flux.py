"""Tiny random-weight FLUX.1-dev checkpoint (``FluxPipeline`` diffusers layout) for the Add-it engine.

The real architecture with every width shrunk (recipe: shared/research/engines.md section 10):

* ``transformer``: ``FluxTransformer2DModel`` with 2 double-stream and 2 single-stream blocks,
  2 heads of 16, rotary axes (4, 4, 8), guidance embedding on (FLUX.1-dev is guidance-distilled);
* ``vae``: a 4-level ``AutoencoderKL`` (so the latent grid is 1/8 of the image, as in FLUX), 4 latent
  channels, no quant convs, FLUX's ``scaling_factor``/``shift_factor``;
* ``text_encoder``/``tokenizer``: the tiny CLIP of the SD-1.5 tiny models (width 32, pooled output);
* ``text_encoder_2``/``tokenizer_2``: a 2-layer ``T5EncoderModel`` of width 32 and a real
  ``T5TokenizerFast``: a ``tokenizers`` Unigram model over letters (with and without the "▁" word
  start), Metaspace pre-tokenizer and the "$A </s>" post-processor, built here offline and saved as
  ``tokenizer.json`` like the real repo's;
* ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with FLUX.1-dev's numbers (dynamic shifting).

Written with ``FluxPipeline.save_pretrained`` to ``diffusers/FLUX.1-dev``, the name the saved
workflow uses for the real (gated) model.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

from . import TinyModel
from .sd_inpaint import tiny_text_config, tiny_tokenizer, write_tokenizer_files

T5_MAX_LENGTH = 32
# scheduler/scheduler_config.json of black-forest-labs/FLUX.1-dev
FLUX_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                  "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}


def tiny_t5_tokenizer():
    """A real ``T5TokenizerFast`` over single letters, digits and punctuation."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    for symbol in string.ascii_letters + string.digits + ".,!?'-":
        pieces += [("\u2581" + symbol, -2.0), (symbol, -3.0)]
    pieces.append(("\u2581", -4.0))
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    with tempfile.TemporaryDirectory() as folder:
        file = str(Path(folder) / "tokenizer.json")
        tokenizer.save(file)
        return T5TokenizerFast(tokenizer_file=file, extra_ids=0, model_max_length=T5_MAX_LENGTH, pad_token="<pad>",
                               eos_token="</s>", unk_token="<unk>")


def tiny_transformer_config() -> dict:
    return {"patch_size": 1, "in_channels": 16, "num_layers": 2, "num_single_layers": 2, "attention_head_dim": 16,
            "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32,
            "axes_dims_rope": (4, 4, 8), "guidance_embeds": True}


def tiny_flux_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=8, sample_size=64, scaling_factor=0.3611,
                         shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)


def tiny_flux_pipeline(seed: int = 0):
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer_2 = tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                 num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER), vae=tiny_flux_vae(),
                        text_encoder=CLIPTextModel(tiny_text_config()), tokenizer=tiny_tokenizer(),
                        text_encoder_2=t5, tokenizer_2=tokenizer_2,
                        transformer=FluxTransformer2DModel(**tiny_transformer_config()))


def build_flux_folder(target: Path, seed: int = 0) -> None:
    pipe = tiny_flux_pipeline(seed)
    pipe.save_pretrained(target, safe_serialization=True)
    write_tokenizer_files(target / "tokenizer")  # the slow CLIP files, as the real repo ships them


def _build_flux_dev(target: Path) -> None:
    build_flux_folder(target, seed=0)


MODELS = [
    TinyModel(name="FLUX.1-dev", folder="diffusers", build=_build_flux_dev,
              description="tiny random FLUX.1-dev (FluxPipeline layout) for the Add-it engine"),
]
