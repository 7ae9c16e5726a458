"""Prompt writer node (engines/prompt_writer.py)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..catalogue.prompts import WRITE_PROMPTS
from ..engines.llm_client import ChatClient
from ..engines.prompt_writer import LocalQwenBackend, OpenAICompatibleBackend, write_prompts
from .convert import image_batch_to_arrays, mask_batch_to_arrays
from .schema import tool_schema

log = logging.getLogger(__name__)


def _backend(backend: str, base_url: str, model: str, local_model: str, temperature: float):
    if backend == "openai":
        return OpenAICompatibleBackend(ChatClient(base_url, model, temperature=temperature))
    if backend == "local":
        from ..engines.grounding import GroundingEngine

        return LocalQwenBackend(GroundingEngine(local_model))
    return None


class WritePrompts(io.ComfyNode):
    TOOL = WRITE_PROMPTS

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, mask, instruction, backend, base_url, model, local_model,
                temperature) -> io.NodeOutput:
        # One prompt pair for the batch: written from the first image (batches of one edit share it).
        rgb = image_batch_to_arrays(image)[0]
        region = mask_batch_to_arrays(mask, 1, rgb.shape[:2])[0]
        result = write_prompts(rgb, region, instruction, _backend(backend, base_url, model, local_model, temperature))
        note = f"{result.source}: {result.note}" if result.note else result.source
        log.info("write_prompts: %s", note)
        return io.NodeOutput(result.positive, result.negative, note)


NODES = [WritePrompts]
