"""Registers the pack with ComfyUI through the V3 entry point."""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger(__name__)

# Node modules of this package; each exposes ``NODES: list[type[io.ComfyNode]]``.
NODE_MODULES = ("boxes", "text", "masks")


def node_classes() -> list[type[io.ComfyNode]]:
    classes: list[type[io.ComfyNode]] = []
    for name in NODE_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        classes.extend(module.NODES)
    return classes


class AgenticEditExtension(ComfyExtension):
    async def on_load(self) -> None:
        from ..models.paths import register_comfy_folders

        register_comfy_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_classes()
