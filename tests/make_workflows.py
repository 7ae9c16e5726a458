"""python -m tests.make_workflows: writes workflows/<name>.json (UI format, for the canvas) from
each workflows/api/<name>.json (API format, the source), using a live ComfyUI's /object_info so
that widget order and socket types are exactly what the frontend expects."""

from __future__ import annotations

import json
import sys
import tempfile

from tests.pack import PACK_ROOT, import_pack


def main() -> int:
    import_pack()
    from agentic_edit.agent.workflow_format import api_to_ui
    from tests.comfy_harness import ComfyServer
    from tests.fixtures import tiny_models_root
    from tests.tiny_models import ensure_models

    ensure_models(tiny_models_root())
    with tempfile.TemporaryDirectory() as tmp, ComfyServer(tmp, models_dir=tiny_models_root()) as server:
        info = server.object_info()
        for api_path in sorted((PACK_ROOT / "workflows" / "api").glob("*.json")):
            ui = api_to_ui(json.loads(api_path.read_text()), info)
            target = PACK_ROOT / "workflows" / api_path.name
            target.write_text(json.dumps(ui, indent=1) + "\n")
            print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
