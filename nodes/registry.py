"""Registers the pack with ComfyUI through the V3 entry point."""

from __future__ import annotations

import importlib
import logging

from comfy_api.latest import ComfyExtension, io

log = logging.getLogger(__name__)

# Node modules of this package; each exposes ``NODES: list[type[io.ComfyNode]]``.
NODE_MODULES = ("boxes", "text", "masks", "edit", "grounding", "segment", "prompts", "inpaint", "insert", "tryon",
                "agent", "agent_continue", "trace", "session")


def node_classes() -> list[type[io.ComfyNode]]:
    classes: list[type[io.ComfyNode]] = []
    for name in NODE_MODULES:
        module = importlib.import_module(f".{name}", __package__)
        classes.extend(module.NODES)
    return classes


def _install_sample_inputs() -> None:
    """Copy the pack's sample photo(s) into ComfyUI's input folder, where the saved workflows'
    LoadImage nodes look for them; an existing file of that name is never overwritten."""
    import shutil
    from pathlib import Path

    import folder_paths

    source = Path(__file__).resolve().parent.parent / "workflows" / "inputs"
    target = Path(folder_paths.get_input_directory())
    for sample in source.glob("*.png"):
        destination = target / sample.name
        if not destination.exists():
            try:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sample, destination)
            except OSError as exc:  # a read-only input folder must not stop the pack from loading
                log.warning("agentic_edit: could not copy sample input %s: %s", sample.name, exc)


class AgenticEditExtension(ComfyExtension):
    async def on_load(self) -> None:
        from ..models.paths import register_comfy_folders

        register_comfy_folders()
        _install_sample_inputs()
        from .routes import register_routes  # before ComfyUI builds its app, which mirrors them under /api

        register_routes()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_classes()
