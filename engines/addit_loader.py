"""FLUX.1-dev for Add-it: which files, how they load, and how they fit a 24 GB card.

The model is a diffusers folder (``FluxPipeline`` layout) in ComfyUI's ``diffusers`` folder, named
``FLUX.1-dev``. The repo is gated: the missing-files message says how to get access. It is loaded as
two store entries so the memory profile can treat them apart:

* the *core* (``FluxCore``): the transformer and the VAE, acquired under the model choice;
* the *text encoders* (``FluxText``): CLIP-L and T5-XXL with their tokenizers, acquired by the path
  of the folder's ``text_encoder_2``. Under ``low`` the store moves them back to the CPU right after
  the prompts are encoded (T5-XXL alone is 8.9 GiB in bf16).

Under ``low`` on a GPU the transformer (22.2 GiB in bf16) does not go to the GPU whole: its 57
blocks stay in pinned CPU memory and ``BlockStreamer`` copies each one in just before it runs, on a
side CUDA stream while the previous block computes, and drops it after; only the small embedders,
the output layers and the VAE are resident. The choice is made when the core is built (the engine
rebuilds it when the profile changes). Under ``auto`` it streams when the card's total memory is too
small for the whole transformer (``wants_streaming``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import ModelSpec, register_spec
from ..models.cache import module_bytes
from ..models.devices import MemoryProfile, memory_profile

log = logging.getLogger(__name__)

FAMILY = "flux_addit"
TEXT_FAMILY = "flux_text_encoders"
DEFAULT_MODEL = "FLUX.1-dev"
REQUIRED_FILES = ("model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model*.safetensors",
                  "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                  "text_encoder/model.safetensors", "text_encoder_2/config.json", "text_encoder_2/model*.safetensors",
                  "tokenizer/*", "tokenizer_2/*", "scheduler/scheduler_config.json")
SPEC = register_spec(ModelSpec(
    key=DEFAULT_MODEL, family=FAMILY, folder="diffusers", repo_id="black-forest-labs/FLUX.1-dev",
    required_files=REQUIRED_FILES,
    # The diffusers components only (not the single-file flux1-dev.safetensors / ae.safetensors copies).
    allow_patterns=("model_index.json", "*/config.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*",
                    "transformer/*.safetensors*", "vae/*.safetensors", "text_encoder/*.safetensors",
                    "text_encoder_2/*.safetensors*"),
    licence="FLUX.1 [dev] Non-Commercial License (https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/"
            "LICENSE.md); Add-it's method is NVIDIA's (non-commercial code licence), this is our own implementation",
    size_gb=34.0, gated=True,
    notes="Only the diffusers sub-folders are needed (transformer, vae, text_encoder, text_encoder_2, tokenizer, "
          "tokenizer_2, scheduler, model_index.json)."))


# ---- block streaming --------------------------------------------------------------------------

class BlockStreamer:
    """Runs a list of blocks whose weights live in (pinned) CPU memory: block i+1 is copied to the
    device on a side stream while block i computes; a block's device copy is dropped after it ran.
    On a CPU device the same path runs with plain copies (what the tests exercise)."""

    def __init__(self, blocks: list[torch.nn.Module], device: torch.device):
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.host: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for block in self.blocks:
            block.to("cpu")
            entries = []
            for tensor in [*block.parameters(), *block.buffers()]:
                host = tensor.data.pin_memory() if self.cuda else tensor.data
                tensor.data = host
                entries.append((tensor, host))
            self.host.append(entries)
        self.pending: dict[int, Any] = {}  # block index -> copy event (None on CPU)
        self.hooks = []
        for index, block in enumerate(self.blocks):
            self.hooks.append(block.register_forward_pre_hook(self._pre_hook(index)))
            self.hooks.append(block.register_forward_hook(self._post_hook(index)))

    @property
    def host_bytes(self) -> int:
        return sum(host.numel() * host.element_size() for entries in self.host for _, host in entries)

    def _load(self, index: int) -> None:
        if index in self.pending:
            return
        entries = self.host[index]
        if self.cuda:
            main = torch.cuda.current_stream(self.device)
            # Allocated on the main stream (freed there in order after use); the copy waits for the
            # work already queued there, so it never overwrites memory a running kernel still reads.
            copies = [torch.empty_like(host, device=self.device) for _, host in entries]
            self.copy_stream.wait_stream(main)
            with torch.cuda.stream(self.copy_stream):
                for copy, (_, host) in zip(copies, entries):
                    copy.copy_(host, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.copy_stream)
        else:
            copies = [host.to(self.device, copy=True) for _, host in entries]
            event = None
        for (tensor, _), copy in zip(entries, copies):
            tensor.data = copy
        self.pending[index] = event

    def _pre_hook(self, index: int):
        def hook(module, args):
            self._load(index)
            event = self.pending[index]
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            self._load((index + 1) % len(self.blocks))  # the next block (the first one for the next step)
        return hook

    def _post_hook(self, index: int):
        def hook(module, args, output):
            for tensor, host in self.host[index]:
                tensor.data = host
            self.pending.pop(index, None)
        return hook

    def release(self) -> None:
        """Drop any prefetched device copies (between runs)."""
        for index in list(self.pending):
            for tensor, host in self.host[index]:
                tensor.data = host
            self.pending.pop(index)


# ---- the two store entries ------------------------------------------------------------------------

@dataclass
class FluxCore:
    """Transformer + VAE (+ the scheduler's numbers). ``streamer`` is set when the blocks stream."""

    transformer: Any
    vae: Any
    scheduler_config: dict
    streamer: BlockStreamer | None = None

    @property
    def streamed(self) -> bool:
        return self.streamer is not None

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def torch_modules(self) -> list[torch.nn.Module]:
        if self.streamer is None:
            return [self.transformer, self.vae]
        t = self.transformer
        resident = [m for name, m in t.named_children() if name not in ("transformer_blocks",
                                                                         "single_transformer_blocks")]
        return resident + [self.vae]


@dataclass
class FluxText:
    """CLIP-L (pooled prompt) and T5 (token embeddings) with their tokenizers."""

    text_encoder: Any
    tokenizer: Any
    text_encoder_2: Any
    tokenizer_2: Any

    def torch_modules(self) -> list[torch.nn.Module]:
        return [self.text_encoder, self.text_encoder_2]

    @property
    def max_sequence_length(self) -> int:
        return int(min(512, self.tokenizer_2.model_max_length))

    @torch.no_grad()
    def encode(self, prompts: list[str], device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 token embeddings [B, L, D], CLIP pooled embeddings [B, P]) as FLUX.1-dev was trained."""
        clip_ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids
        pooled = self.text_encoder(clip_ids.to(device), output_hidden_states=False).pooler_output
        t5_ids = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids
        embeds = self.text_encoder_2(t5_ids.to(device), output_hidden_states=False)[0]
        return embeds.to(dtype), pooled.to(dtype)

    def subject_positions(self, prompt: str, start: int, end: int) -> list[int]:
        """T5 token positions covering characters ``start:end`` of ``prompt`` (within the max length)."""
        encoded = self.tokenizer_2(prompt, max_length=self.max_sequence_length, truncation=True,
                                   return_offsets_mapping=True)
        return [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > a and a < end and b > start]


# Under ``auto`` the blocks stream when the transformer and this much room for activations, the VAE and
# the CUDA context do not fit in the card's whole memory (a 24 GB card streams, a 48 GB one keeps it).
STREAM_HEADROOM_BYTES = 4 * 2**30


def wants_streaming(transformer_bytes: int, device: torch.device) -> bool:
    """``low``: stream (on any device); ``high``: keep it resident; ``auto``: stream on a GPU whose total
    memory is too small for the transformer. The answer depends on the card, not on the memory free at
    the moment, so a model built one way is not rebuilt the other way just because it is loaded now."""
    profile = memory_profile()
    if profile is not MemoryProfile.AUTO:
        return profile is MemoryProfile.LOW
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return transformer_bytes + STREAM_HEADROOM_BYTES > total


def build_core(resolved, device, dtype) -> FluxCore:
    """The store's build for the core: on the CPU, or with the blocks streaming (see the module doc)."""
    import json

    from diffusers import AutoencoderKL, FluxTransformer2DModel

    path = Path(resolved.path)
    transformer = FluxTransformer2DModel.from_pretrained(str(path), subfolder="transformer", dtype=dtype)
    vae = AutoencoderKL.from_pretrained(str(path), subfolder="vae", dtype=dtype)
    transformer.eval().requires_grad_(False)
    vae.eval().requires_grad_(False)
    config_file = path / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    core = FluxCore(transformer, vae, scheduler_config)
    if wants_streaming(module_bytes([transformer]), torch.device(device)):
        blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        core.streamer = BlockStreamer(blocks, torch.device(device))
        log.info("FLUX transformer: %d blocks stream from %s CPU memory (%.1f GiB)", len(blocks),
                 "pinned" if core.streamer.cuda else "plain", core.streamer.host_bytes / 2**30)
    return core


def build_text(resolved, device, dtype) -> FluxText:
    """The store's build for the text encoders; ``resolved.path`` is the folder's ``text_encoder_2``."""
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, T5EncoderModel

    root = Path(resolved.path).parent
    clip = CLIPTextModel.from_pretrained(str(root), subfolder="text_encoder", dtype=dtype).eval()
    t5 = T5EncoderModel.from_pretrained(str(root), subfolder="text_encoder_2", dtype=dtype).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(root), subfolder="tokenizer")
    tokenizer_2 = AutoTokenizer.from_pretrained(str(root), subfolder="tokenizer_2")
    if not getattr(tokenizer_2, "is_fast", False):
        raise ValueError(f"{root / 'tokenizer_2'}: a fast T5 tokenizer (tokenizer.json) is needed to find the "
                         "subject word's tokens")
    return FluxText(clip.requires_grad_(False), tokenizer, t5.requires_grad_(False), tokenizer_2)


__all__ = ["BlockStreamer", "DEFAULT_MODEL", "FAMILY", "FluxCore", "FluxText", "SPEC", "TEXT_FAMILY", "build_core",
           "build_text", "wants_streaming"]
