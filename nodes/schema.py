"""Builds a V3 ``io.Schema`` from a catalogue ``Tool``: the node's inputs, ranges, defaults,
tooltips and outputs come from the one tool description."""

from __future__ import annotations

from comfy_api.latest import io

from ..catalogue.spec import Arg, Out, Tool


def _input(arg: Arg):
    common = dict(display_name=arg.display_name, optional=arg.optional, tooltip=arg.description)
    kind = arg.kind
    if kind == "image":
        return io.Image.Input(arg.name, **common)
    if kind == "mask":
        return io.Mask.Input(arg.name, **common)
    if kind == "boxes":
        # Core's BOUNDING_BOX socket: RT-DETR, SAM3 and the box-drawing nodes speak it.
        return io.BoundingBox.Input(arg.name, force_input=True, **common)
    if kind == "points":
        # Core's SAM3 convention: a JSON list of pixel {"x", "y"} dicts on a STRING socket.
        return io.String.Input(arg.name, force_input=True, **common)
    if kind == "int":
        return io.Int.Input(arg.name, default=arg.default, min=arg.minimum, max=arg.maximum,
                            step=arg.step, **common)
    if kind == "float":
        return io.Float.Input(arg.name, default=arg.default, min=arg.minimum, max=arg.maximum,
                              step=arg.step, **common)
    if kind in ("string", "color"):
        return io.String.Input(arg.name, default=arg.default, multiline=arg.multiline, **common)
    if kind == "bool":
        return io.Boolean.Input(arg.name, default=arg.default, **common)
    if kind == "choice":
        options = arg.resolved_choices()
        default = arg.default if arg.default in options else (options[0] if options else None)
        return io.Combo.Input(arg.name, options=options, default=default, **common)
    raise ValueError(f"no ComfyUI input for kind {kind!r} (argument {arg.name!r})")


def _output(out: Out):
    common = dict(display_name=out.name, tooltip=out.description)
    return {
        "image": io.Image.Output,
        "mask": io.Mask.Output,
        "boxes": io.BoundingBox.Output,
        "points": io.String.Output,
        "string": io.String.Output,
        "int": io.Int.Output,
        "float": io.Float.Output,
        "bool": io.Boolean.Output,
    }[out.kind](**common)


def tool_schema(tool: Tool, *, hidden=(), **flags) -> io.Schema:
    """The node schema of ``tool``; ``flags`` are passed to ``io.Schema`` (e.g. ``is_output_node``)."""
    return io.Schema(
        node_id=tool.node_id,
        display_name=tool.display_name,
        category=tool.category,
        description=tool.description,
        search_aliases=list(tool.search_aliases),
        inputs=[_input(a) for a in tool.args],
        outputs=[_output(o) for o in tool.outputs],
        hidden=list(hidden),
        **flags,
    )
