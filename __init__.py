"""Agentic Image Editor for ComfyUI.

ComfyUI imports this folder as a package. The nodes are registered through the V3 entry point
(``comfy_entrypoint``); this module deliberately defines no ``NODE_CLASS_MAPPINGS``, because a
module that has one makes ComfyUI ignore ``comfy_entrypoint``.

Nothing heavy is imported here: the pack's engines and tests import this package without ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.registry import AgenticEditExtension

    return AgenticEditExtension()
