"""Launcher for the ``agentic-edit`` command from a cloned pack (``custom_nodes/<any folder name>``):

    python custom_nodes/comfyui-agentic-edit/agentic_edit_cli.py edit photo.png "write 'SALE' at the top"

The pack is a package whose folder name varies (and may hold a '-'), so it is imported from this
file's folder under the name ``agentic_edit``, as the tests do; when the pack is pip-installed, that
name is importable already and the ``agentic-edit`` script calls the same ``main``. ComfyUI never
imports this file (it loads the pack's ``__init__.py``).
"""

import importlib.util
import sys
from pathlib import Path

PACK_NAME = "agentic_edit"


def load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    root = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location(PACK_NAME, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    load_pack()
    from agentic_edit.agent.cli import main

    sys.exit(main())
