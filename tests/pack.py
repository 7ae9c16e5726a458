"""Import this repository as the package ``agentic_edit``, whatever its folder is called.

ComfyUI imports the pack by its folder name (``custom_nodes/<folder>``); tests and the tiny-model
command need a stable name, and the pack's relative imports need a parent package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "agentic_edit"


def import_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
