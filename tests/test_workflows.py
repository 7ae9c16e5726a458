"""Every saved workflow, in both formats, against a live ComfyUI: its node types and inputs exist
in /object_info, the UI file describes the same graph as the API file, and it runs."""

from __future__ import annotations

import json

import pytest

from agentic_edit.agent.workflow_format import ui_to_api
from tests.pack import PACK_ROOT

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

WORKFLOWS = PACK_ROOT / "workflows"
API_FILES = sorted((WORKFLOWS / "api").glob("*.json"))
UI_FILES = sorted(WORKFLOWS.glob("*.json"))


def _strip(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def test_both_formats_exist_for_every_workflow():
    assert API_FILES, "no API-format workflows in workflows/api/"
    assert {p.stem for p in API_FILES} == {p.stem for p in UI_FILES}


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_matches_object_info(comfy_server, path):
    info = comfy_server.object_info()
    prompt = json.loads(path.read_text())
    for node_id, node in prompt.items():
        assert node["class_type"] in info, f"{path.name} node {node_id}: unknown type {node['class_type']}"
        definition = info[node["class_type"]]["input"]
        declared = {**definition.get("required", {}), **definition.get("optional", {})}
        unknown = set(node["inputs"]) - set(declared)
        assert not unknown, f"{path.name} node {node_id}: inputs {unknown} not in /object_info"
        missing = set(definition.get("required", {})) - set(node["inputs"])
        assert not missing, f"{path.name} node {node_id}: required inputs {missing} not set"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_is_the_api_workflow(comfy_server, path):
    info = comfy_server.object_info()
    ui = json.loads(path.read_text())
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    assert _strip(ui_to_api(ui, info)) == _strip(api)


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs(comfy_server, path):
    result = comfy_server.run(json.loads(path.read_text()))
    assert result.history["status"]["status_str"] == "success"
    files = [comfy_server.output_path(ref) for ref in result.images()]
    assert files and all(f.is_file() and f.stat().st_size > 0 for f in files), result.outputs


def test_workflows_are_listed_as_templates(comfy_server):
    templates = comfy_server.get_json("/api/workflow_templates")
    listed = [names for pack, names in templates.items() if "agentic_edit" in pack]
    assert listed and sorted(listed[0]) == sorted(p.stem for p in UI_FILES), templates
