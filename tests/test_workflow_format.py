"""API <-> UI workflow conversion, on node definitions shaped like /object_info's."""

from __future__ import annotations

import pytest

from agentic_edit.agent.workflow_format import WorkflowFormatError, api_to_ui, ui_to_api

OBJECT_INFO = {
    "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]},
    "KSamplerLike": {"input": {"required": {"image": ["IMAGE", {}], "seed": ["INT", {"default": 0, "control_after_generate": True}],
                                            "steps": ["INT", {"default": 20}], "text": ["STRING", {"forceInput": True}]},
                               "optional": {"mask": ["MASK", {}], "mode": ["COMBO", {"options": ["x", "y"], "default": "x"}]}},
                     "input_order": {"required": ["image", "seed", "steps", "text"], "optional": ["mask", "mode"]},
                     "output": ["IMAGE"], "output_name": ["image"]},
    "PrimitiveText": {"input": {"required": {"value": ["STRING", {"default": ""}]}}, "input_order": {"required": ["value"]},
                      "output": ["STRING"], "output_name": ["STRING"]},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "input_order": {"required": ["images", "filename_prefix"]}, "output": [], "output_name": []},
}

PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
    "2": {"class_type": "PrimitiveText", "inputs": {"value": "hi"}},
    "3": {"class_type": "KSamplerLike", "inputs": {"image": ["1", 0], "seed": 7, "steps": ["9", 0], "text": ["2", 0],
                                                   "mask": ["1", 1], "mode": "y"}},
    "9": {"class_type": "PrimitiveText", "inputs": {"value": "x"}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "out"}},
}


def strip_meta(prompt):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def test_round_trip_keeps_graph_widgets_and_links():
    ui = api_to_ui(PROMPT, OBJECT_INFO)
    original_id = {str(i + 1): node_id for i, node_id in enumerate(PROMPT)}  # UI ids are 1..n in prompt order
    back = {}
    for ui_id, node in ui_to_api(ui, OBJECT_INFO).items():
        inputs = {name: [original_id[v[0]], v[1]] if isinstance(v, list) else v for name, v in node["inputs"].items()}
        back[original_id[ui_id]] = {"class_type": node["class_type"], "inputs": inputs}
    # a linked widget ("steps") keeps its link, not the default saved in widgets_values
    assert back == strip_meta(PROMPT)


def test_ui_layout_values_and_extra_widget_values():
    ui = api_to_ui(PROMPT, OBJECT_INFO)
    nodes = {n["type"] + str(n["id"]): n for n in ui["nodes"]}
    load = nodes["LoadImage1"]
    assert load["widgets_values"] == ["b.png", "image"]  # the upload button's saved value
    sampler = nodes["KSamplerLike3"]
    assert sampler["widgets_values"] == [7, "fixed", 20, "y"]  # seed, control_after_generate, steps (linked: default), mode
    linked_widget = [i for i in sampler["inputs"] if i["name"] == "steps"][0]
    assert linked_widget["widget"] == {"name": "steps"} and linked_widget["link"] is not None
    assert load["pos"][0] < sampler["pos"][0] < nodes["SaveImage5"]["pos"][0]
    assert ui["last_link_id"] == len(ui["links"]) == 5


def test_unknown_node_type_and_cycles_are_named():
    with pytest.raises(WorkflowFormatError, match="node 1: unknown node type 'Nope'"):
        api_to_ui({"1": {"class_type": "Nope", "inputs": {}}}, OBJECT_INFO)
    cyclic = {"1": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}}
    with pytest.raises(WorkflowFormatError, match="cycle"):
        api_to_ui(cyclic, OBJECT_INFO)


def test_muted_nodes_are_left_out():
    ui = api_to_ui(PROMPT, OBJECT_INFO)
    ui["nodes"][-1]["mode"] = 2
    assert len(ui_to_api(ui, OBJECT_INFO)) == len(PROMPT) - 1
