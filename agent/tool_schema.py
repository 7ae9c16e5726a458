"""The catalogue as an LLM sees it: OpenAI function-calling tools and a JSON schema for a whole plan
(structured output). Everything comes from the catalogue's ``Tool``/``Arg``/``Out`` objects: kinds,
ranges, defaults, choices and descriptions, so the planner's view never drifts from the nodes.

Only tools and arguments the planner may use (``agent=True``) appear. Connection arguments (image,
mask, boxes, points) go under ``inputs`` as references (``plan.REFERENCE_PATTERN``); literal
arguments under ``args``. A text argument may also be fed from an earlier step's text output
(``write_prompts``' positive prompt into ``inpaint``'s ``prompt``), so it is offered under
``inputs`` too. Choices computed at run time (installed models, fonts) are never computed here.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping

from ..catalogue.spec import Arg, Tool
from .arg_values import kind_noun
from .plan import MAX_STEPS, REFERENCE_PATTERN, STEP_ID_PATTERN, Plan, PlanError, Step, agent_tools

_JSON_TYPES = {"int": "integer", "float": "number", "string": "string", "bool": "boolean",
               "choice": "string", "color": "string"}
_REFERENCE_EXAMPLES = {
    "image": "'image' (the image being edited), 'reference' / 'reference_2' (reference images) or an earlier "
             "step's image such as 's2.image'",
    "mask": "an earlier step's mask such as 's1.mask'",
    "boxes": "an earlier step's boxes such as 's1.boxes'",
    "points": "an earlier step's points such as 's1.points'",
    "string": "an earlier step's text output such as 's2.positive'",
}
_LINKABLE_VALUE_KINDS = ("string", "color")  # literal kinds an LLM may also wire from a text output


def reference_schema(kind: str, description: str = "") -> dict:
    text = f"A reference to {kind_noun(kind)}: {_REFERENCE_EXAMPLES.get(kind, 'an earlier step output')}."
    return {"type": "string", "pattern": REFERENCE_PATTERN,
            "description": f"{description} {text}".strip()}


def value_schema(arg: Arg) -> dict:
    """JSON schema of a literal argument: its type, range, default, choices and description."""
    schema = {"type": _JSON_TYPES[arg.kind], "description": arg.description}
    if arg.kind in ("int", "float"):
        if arg.minimum is not None:
            schema["minimum"] = arg.minimum
        if arg.maximum is not None:
            schema["maximum"] = arg.maximum
    if arg.kind == "choice" and not callable(arg.choices):
        schema["enum"] = list(arg.choices)
    if arg.kind == "color":
        schema["description"] += " (a colour name such as 'red' or a hex colour such as '#ff0000')"
    if arg.default is not None:
        schema["default"] = arg.default
    return schema


def args_schema(tool: Tool) -> dict:
    """The ``args`` object of a step of ``tool``: its literal arguments."""
    values = [a for a in tool.args if a.agent and not a.is_link]
    return {"type": "object",
            "properties": {a.name: value_schema(a) for a in values},
            "required": [a.name for a in values if a.default is None and not a.optional],
            "additionalProperties": False}


def inputs_schema(tool: Tool) -> dict:
    """The ``inputs`` object of a step of ``tool``: its connections, as references."""
    properties, required = {}, []
    for a in tool.args:
        if not a.agent:
            continue
        if a.is_link:
            properties[a.name] = reference_schema(a.kind, a.description)
            if not a.optional:
                required.append(a.name)
        elif a.kind in _LINKABLE_VALUE_KINDS:
            properties[a.name] = reference_schema(
                "string", f"Instead of args.{a.name}, take it from an earlier step (leave it out of args then).")
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def describe_outputs(tool: Tool) -> str:
    return "; ".join(f"{o.name} ({kind_noun(o.kind)}): {o.description}" for o in tool.outputs)


def step_schema(tool: Tool) -> dict:
    """One step that runs ``tool``: ``{"id", "tool", "args", "inputs"}``."""
    return {"type": "object",
            "description": f"{tool.description} Outputs: {describe_outputs(tool)}",
            "properties": {"id": _id_schema(), "tool": {"type": "string", "const": tool.name},
                           "args": args_schema(tool), "inputs": inputs_schema(tool)},
            "required": ["id", "tool", "args", "inputs"],
            "additionalProperties": False}


def _id_schema() -> dict:
    return {"type": "string", "pattern": f"^{STEP_ID_PATTERN}$",
            "description": "This step's id, such as 's1'; later steps use its outputs as '<id>.<output>'."}


def plan_schema(tools: Iterable[Tool] | None = None, max_steps: int = MAX_STEPS) -> dict:
    """JSON schema of a whole plan, one ``oneOf`` branch per tool (told apart by ``tool``)."""
    return {"type": "object",
            "properties": {
                "steps": {"type": "array", "minItems": 1, "maxItems": max_steps,
                          "description": "The steps in the order they run; each uses only outputs of earlier steps.",
                          "items": {"oneOf": [step_schema(t) for t in agent_tools(tools)]}},
                "notes": {"type": "string", "description": "One sentence on how the plan does the edit."},
                "output": {**reference_schema("image"),
                           "description": "Which image the edit returns (default: the last step's image)."},
            },
            "required": ["steps"],
            "additionalProperties": False}


def response_format(tools: Iterable[Tool] | None = None, name: str = "edit_plan") -> dict:
    """``response_format`` for an OpenAI-compatible chat completion that must answer with a plan."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": plan_schema(tools)}}


def tool_function(tool: Tool) -> dict:
    """One tool in OpenAI function-calling form: calling it adds one step to the plan."""
    return {"type": "function",
            "function": {"name": tool.name,
                         "description": f"{tool.description} Outputs: {describe_outputs(tool)}",
                         "parameters": {"type": "object",
                                        "properties": {"id": _id_schema(), "args": args_schema(tool),
                                                       "inputs": inputs_schema(tool)},
                                        "required": ["id", "args", "inputs"],
                                        "additionalProperties": False}}}


def tool_functions(tools: Iterable[Tool] | None = None) -> list[dict]:
    """The OpenAI ``tools`` list: one function per tool the planner may use."""
    return [tool_function(t) for t in agent_tools(tools)]


def plan_from_tool_calls(calls: Iterable, instruction: str = "") -> Plan:
    """A plan from an assistant message's tool calls, in order (not validated: call ``validate``).

    Each call is an OpenAI SDK tool call (``call.function.name`` / ``.arguments``) or a dict
    ``{"name", "arguments"}`` (``{"function": {...}}`` too); ``arguments`` is JSON text or a dict.
    A call without an ``id`` gets ``s<n>``.
    """
    steps, problems = [], []
    for n, call in enumerate(calls, 1):
        name, arguments = _call_parts(call)
        if isinstance(arguments, (str, bytes)):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError as exc:
                problems.append(f"call #{n} ({name}): its arguments are not valid JSON ({exc})")
                continue
        if not isinstance(arguments, Mapping):
            problems.append(f"call #{n} ({name}): its arguments must be an object {{\"id\", \"args\", \"inputs\"}}")
            continue
        args, inputs = arguments.get("args", {}), arguments.get("inputs", {})
        if not isinstance(args, Mapping) or not isinstance(inputs, Mapping):
            problems.append(f"call #{n} ({name}): \"args\" and \"inputs\" must be objects")
            continue
        steps.append(Step(str(arguments.get("id") or f"s{n}"), str(name), dict(args), dict(inputs)))
    if problems:
        raise PlanError(problems)
    return Plan(steps, instruction)


def _call_parts(call) -> tuple[str, object]:
    function = getattr(call, "function", None)
    if function is not None:
        return function.name, function.arguments
    if isinstance(call, Mapping):
        inner = call.get("function", call)
        return inner.get("name", ""), inner.get("arguments", {})
    raise PlanError([f"a tool call must be an object with a name and arguments, not {type(call).__name__}"])
