"""Converts between ComfyUI's two workflow formats.

* API format (what ``POST /prompt`` takes): ``{node_id: {"class_type", "inputs": {name: value |
  [source_id, output_index]}}}``.
* UI format (what the canvas saves and loads): litegraph nodes with positions, ``widgets_values``
  in widget order, and a separate link table.

Both directions need the node definitions that ``GET /object_info`` returns: which inputs are
widgets, in which order, and which widgets carry a hidden extra value (a seed's "control after
generate", an image combo's upload button). The functions are pure so that the planner's compiler
can export a plan for the canvas and the tests can run a saved UI workflow through ``/prompt``.
"""

from __future__ import annotations

from collections import defaultdict

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Input options that make the frontend add one more widget (and one more saved value) after it.
_EXTRA_VALUE_OPTIONS = ("control_after_generate", "image_upload", "video_upload", "audio_upload")

_COLUMN_WIDTH = 380
_ROW_HEIGHT = 300


class WorkflowFormatError(ValueError):
    """A workflow that cannot be converted; the message names the node and the input."""


def _inputs_in_order(definition: dict) -> list[tuple[str, list, bool]]:
    """(name, [type, options], optional) for every input of a node definition, in UI order."""
    spec = definition.get("input", {})
    order = definition.get("input_order") or {s: list(spec.get(s, {})) for s in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            entry = spec.get(section, {}).get(name)
            if entry is not None:
                out.append((name, list(entry), section == "optional"))
    return out


def _is_widget(entry: list) -> bool:
    kind = entry[0]
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_values(entry: list) -> int:
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    return sum(1 for key in _EXTRA_VALUE_OPTIONS if options.get(key))


def _socket_type(entry: list) -> str:
    return "COMBO" if isinstance(entry[0], list) else entry[0]


def _definition(object_info: dict, class_type: str, node_id) -> dict:
    try:
        return object_info[class_type]
    except KeyError:
        raise WorkflowFormatError(f"node {node_id}: unknown node type {class_type!r} "
                                  "(is the pack that provides it installed?)") from None


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


# ---- API -> UI -----------------------------------------------------------------------------

def _depths(prompt: dict) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str, trail: tuple = ()) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in trail:
            raise WorkflowFormatError(f"node {node_id}: the graph has a cycle through it")
        parents = [v[0] for v in prompt[node_id]["inputs"].values() if _is_link(v) and v[0] in prompt]
        depth[node_id] = 1 + max((visit(p, trail + (node_id,)) for p in parents), default=-1)
        return depth[node_id]

    for node_id in prompt:
        visit(node_id)
    return depth


def api_to_ui(prompt: dict, object_info: dict, titles: dict[str, str] | None = None) -> dict:
    """An API-format prompt as a UI-format workflow, laid out left to right by dependency depth."""
    ids = {node_id: i + 1 for i, node_id in enumerate(prompt)}
    depth = _depths(prompt)
    rows: dict[int, int] = defaultdict(int)
    links: list[list] = []
    nodes: list[dict] = []
    outgoing: dict[tuple[str, int], list[int]] = defaultdict(list)

    for node_id, node in prompt.items():
        definition = _definition(object_info, node["class_type"], node_id)
        for name, entry, _ in _inputs_in_order(definition):
            value = node["inputs"].get(name)
            if _is_link(value):
                if value[0] not in prompt:
                    raise WorkflowFormatError(f"node {node_id}: input {name!r} links to missing node {value[0]!r}")
                out_types = _definition(object_info, prompt[value[0]]["class_type"], value[0]).get("output", [])
                link_type = out_types[value[1]] if value[1] < len(out_types) else _socket_type(entry)
                link_id = len(links) + 1
                links.append([link_id, ids[value[0]], value[1], ids[node_id], None, link_type, name])
                outgoing[(value[0], value[1])].append(link_id)

    for node_id, node in prompt.items():
        definition = _definition(object_info, node["class_type"], node_id)
        col = depth[node_id]
        pos = [50 + col * _COLUMN_WIDTH, 50 + rows[col] * _ROW_HEIGHT]
        rows[col] += 1
        inputs, widgets_values = [], []
        for name, entry, _ in _inputs_in_order(definition):
            value = node["inputs"].get(name)
            linked = _is_link(value)
            if _is_widget(entry):
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                widgets_values.append(options.get("default") if linked or value is None else value)
                widgets_values.extend(_extra_widget_values(entry))
                if linked:
                    inputs.append({"name": name, "type": _socket_type(entry), "widget": {"name": name}, "link": None})
            else:
                inputs.append({"name": name, "type": _socket_type(entry), "link": None})
        for slot, item in enumerate(inputs):
            for link in links:
                if link[3] == ids[node_id] and link[6] == item["name"]:
                    link[4] = slot
                    item["link"] = link[0]
        outputs = [{"name": name, "type": kind, "links": outgoing.get((node_id, i), []), "slot_index": i}
                   for i, (name, kind) in enumerate(zip(definition.get("output_name", definition.get("output", [])),
                                                        definition.get("output", [])))]
        ui_node = {"id": ids[node_id], "type": node["class_type"], "pos": pos, "size": [320, 220],
                   "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": outputs,
                   "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets_values}
        title = (titles or {}).get(node_id) or node.get("_meta", {}).get("title")
        if title:
            ui_node["title"] = title
        nodes.append(ui_node)

    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes,
            "links": [link[:6] for link in links], "groups": [], "config": {}, "extra": {}, "version": 0.4}


def _extra_widget_values(entry: list) -> list:
    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    values = []
    if options.get("control_after_generate"):
        values.append("fixed")
    for key in ("image_upload", "video_upload", "audio_upload"):
        if options.get(key):
            values.append(key.split("_")[0])
    return values


# ---- UI -> API -----------------------------------------------------------------------------

def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow as the API prompt the frontend would queue (muted and bypassed nodes
    are left out; a bypassed node's consumers are not rewired, so keep saved workflows free of them)."""
    link_table = {link[0]: link for link in workflow.get("links", [])}
    active = {n["id"] for n in workflow["nodes"] if n.get("mode", 0) == 0}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        if node["id"] not in active:
            continue
        class_type = node["type"]
        if class_type in ("Reroute", "PrimitiveNode", "Note", "MarkdownNote"):
            if class_type in ("Note", "MarkdownNote"):
                continue
            raise WorkflowFormatError(f"node {node['id']}: {class_type} nodes are not supported in saved workflows")
        definition = _definition(object_info, class_type, node["id"])
        linked = {}
        for item in node.get("inputs", []):
            link = link_table.get(item.get("link"))
            if link is not None and link[1] in active:
                linked[item["name"]] = [str(link[1]), link[2]]
        values = list(node.get("widgets_values") or [])
        inputs: dict = {}
        cursor = 0
        for name, entry, optional in _inputs_in_order(definition):
            if _is_widget(entry):
                if cursor < len(values):
                    inputs[name] = values[cursor]
                cursor += 1 + _extra_values(entry)
            if name in linked:
                inputs[name] = linked[name]
        prompt[str(node["id"])] = {"class_type": class_type, "inputs": inputs,
                                   "_meta": {"title": node.get("title", class_type)}}
    return prompt
