"""The pack inside a real ComfyUI: it imports, and /object_info lists every node with its
category, description and tooltips, built from the one tool catalogue."""

from __future__ import annotations

import pytest

from agentic_edit.catalogue import all_tools
from agentic_edit.catalogue.spec import NODE_PREFIX

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def test_pack_imported_without_error(comfy_server):
    log = comfy_server.log_tail(200_000)
    assert "IMPORT FAILED" not in log or "agentic_edit" not in log.split("IMPORT FAILED")[-1][:300], log
    assert "Cannot import" not in log or "agentic_edit" not in log, log


def test_every_catalogued_tool_is_a_node(comfy_server):
    info = comfy_server.object_info()
    for tool in all_tools():
        assert tool.node_id in info, f"{tool.node_id} missing from /object_info"
        node = info[tool.node_id]
        assert node["category"] == tool.category
        assert node["description"] == tool.description
        assert node["python_module"].endswith("agentic_edit")
        declared = {**node["input"].get("required", {}), **node["input"].get("optional", {})}
        assert list(declared) == [a.name for a in tool.args]
        for arg in tool.args:
            options = declared[arg.name][1]
            assert options.get("tooltip") == arg.description, (tool.node_id, arg.name)
            if arg.kind in ("int", "float") and arg.default is not None:
                assert options["default"] == arg.default
        assert node["output_name"] == [o.name for o in tool.outputs]
        assert all(node.get("output_tooltips") or [None]), tool.node_id


def test_every_pack_node_is_catalogued_and_prefixed(comfy_server):
    info = comfy_server.object_info()
    ours = {name for name, node in info.items() if node["python_module"].endswith("agentic_edit")}
    assert ours, "no node of this pack in /object_info"
    assert all(name.startswith(NODE_PREFIX) for name in ours), sorted(ours)
    catalogued = {t.node_id for t in all_tools()}
    # Nodes that are not agent tools (session, planner) are catalogued too: one description each.
    assert ours == catalogued, (sorted(ours - catalogued), sorted(catalogued - ours))
