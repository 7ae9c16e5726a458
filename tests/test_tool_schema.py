"""The planner's view of the catalogue (function-calling tools, a whole-plan JSON schema) comes from
the catalogue alone: every agent tool and argument appears with the catalogue's own ranges,
defaults and choices, and nothing hidden leaks in."""

import json
import re
from types import SimpleNamespace

import pytest

from agentic_edit.agent.plan import REFERENCE_PATTERN, PlanError, validate
from agentic_edit.agent.tool_schema import (plan_from_tool_calls, plan_schema, response_format, tool_function,
                                            tool_functions)
from agentic_edit.catalogue import all_tools
from tests.agent_tools import sample_catalogue


def _functions_by_name(tools):
    return {f["function"]["name"]: f["function"] for f in tool_functions(tools)}


@pytest.mark.parametrize("catalogue", ["real", "sample"])
def test_every_agent_tool_and_argument_appears_as_in_the_catalogue(catalogue):
    tools = all_tools() if catalogue == "real" else sample_catalogue(future=True)
    functions = _functions_by_name(tools)
    steps = plan_schema(tools)["properties"]["steps"]
    branches = {b["properties"]["tool"]["const"]: b for b in steps["items"]["oneOf"]}
    agent = [t for t in tools if t.agent]
    assert set(functions) == set(branches) == {t.name for t in agent}
    assert {t.name for t in tools if not t.agent}.isdisjoint(functions)
    for tool in agent:
        for where in (functions[tool.name]["parameters"]["properties"], branches[tool.name]["properties"]):
            args, inputs = where["args"]["properties"], where["inputs"]["properties"]
            for arg in tool.args:
                if not arg.agent:
                    assert arg.name not in args and arg.name not in inputs, (tool.name, arg.name)
                    continue
                if arg.is_link:
                    assert arg.name not in args
                    assert inputs[arg.name]["pattern"] == REFERENCE_PATTERN
                    assert inputs[arg.name]["description"].startswith(arg.description)
                    continue
                schema = args[arg.name]
                assert schema["description"].startswith(arg.description)
                assert schema.get("minimum") == arg.minimum and schema.get("maximum") == arg.maximum
                assert schema.get("default") == arg.default
                json_type = {"int": "integer", "float": "number", "bool": "boolean"}.get(arg.kind, "string")
                assert schema["type"] == json_type
                if arg.kind == "choice" and not callable(arg.choices):
                    assert schema["enum"] == list(arg.choices)
            required_links = [a.name for a in tool.args if a.agent and a.is_link and not a.optional]
            assert where["inputs"]["required"] == required_links
            for out in tool.outputs:
                assert out.name in functions[tool.name]["description"]


def test_hidden_settings_of_the_real_catalogue_stay_hidden():
    text = json.dumps(tool_functions(all_tools()))
    for hidden in ("sam_model", "grounding_model", "base_url", "max_new_tokens", "record_step", "write_trace"):
        assert f'"{hidden}"' not in text


def test_required_value_arguments_without_default():
    tool = {t.name: t for t in sample_catalogue()}["make_grid"]
    assert tool_function(tool)["function"]["parameters"]["properties"]["args"]["required"] == ["columns"]


def test_text_arguments_may_also_be_wired():
    inpaint = _functions_by_name(sample_catalogue())["inpaint"]["parameters"]["properties"]
    assert set(inpaint["inputs"]["properties"]) == {"image", "mask", "prompt", "negative_prompt"}
    assert inpaint["inputs"]["required"] == ["image", "mask"]
    assert "strength" not in inpaint["inputs"]["properties"]


def test_choices_computed_at_run_time_are_not_computed():
    # the sample catalogue's callables fail the test when called; the real catalogue's would import engines
    grounding = _functions_by_name(sample_catalogue())["ground"]
    assert "model" not in grounding["parameters"]["properties"]["args"]["properties"]


@pytest.mark.parametrize("ref, ok", [
    ("image", True), ("reference", True), ("reference_2", True), ("s1.mask", True), ("step_3.image", True),
    ("session:cup_mask", True), ("session:turn2/cat-mask", True), ("session:turn2.mask", False),
    ("KSampler", False), ("s1", False), ("1.mask", False), ("reference_0", False), ("s1.mask; rm -rf /", False),
    ("", False), ("session:", False),
])
def test_reference_pattern(ref, ok):
    assert bool(re.match(REFERENCE_PATTERN, ref)) is ok


def test_plan_schema_accepts_valid_plans_and_rejects_bad_ones():
    jsonschema = pytest.importorskip("jsonschema")
    tools = sample_catalogue()
    schema = plan_schema(tools)
    jsonschema.Draft202012Validator.check_schema(schema)
    plan = validate([{"id": "s1", "tool": "segment_by_text", "args": {"query": "cup"}, "inputs": {"image": "image"}},
                     {"id": "s2", "tool": "inpaint", "args": {"prompt": "a mug"},
                      "inputs": {"image": "image", "mask": "s1.mask"}}], tools)
    jsonschema.validate({"steps": plan.to_dict()["steps"], "notes": plan.notes, "output": plan.output}, schema)
    bad_plans = [
        {"steps": []},
        {"steps": [{"id": "s1", "tool": "KSampler", "args": {}, "inputs": {}}]},
        {"steps": [{"id": "s1", "tool": "inpaint", "args": {"strength": 2},
                    "inputs": {"image": "image", "mask": "x.m"}}]},
        {"steps": [{"id": "s1", "tool": "inpaint", "args": {}, "inputs": {"image": "image"}}]},
        {"steps": [{"id": "s1", "tool": "place_region", "args": {"position": "upstairs"},
                    "inputs": {"image": "image"}}]},
        {"steps": [{"id": "s1", "tool": "remove_object", "args": {"model": "x"},
                    "inputs": {"image": "image", "mask": "a.b"}}]},
    ]
    for bad in bad_plans:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert response_format(tools)["json_schema"] == {"name": "edit_plan", "schema": schema}


def test_real_catalogue_schema_is_valid_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(plan_schema())
    for function in tool_functions():
        jsonschema.Draft202012Validator.check_schema(function["function"]["parameters"])


def test_plan_from_tool_calls():
    calls = [
        SimpleNamespace(function=SimpleNamespace(name="segment_by_text", arguments=json.dumps(
            {"id": "s1", "args": {"query": "cup"}, "inputs": {"image": "image"}}))),
        {"function": {"name": "remove_object", "arguments": {"inputs": {"image": "image", "mask": "s1.mask"}}}},
    ]
    plan = plan_from_tool_calls(calls, "remove the cup")
    assert plan.instruction == "remove the cup"
    assert [(s.id, s.tool) for s in plan.steps] == [("s1", "segment_by_text"), ("s2", "remove_object")]
    assert validate(plan, sample_catalogue()).output == "s2.image"


def test_plan_from_bad_tool_calls():
    with pytest.raises(PlanError) as info:
        plan_from_tool_calls([{"name": "inpaint", "arguments": "{not json"},
                              {"name": "inpaint", "arguments": "[1]"},
                              {"name": "inpaint", "arguments": {"args": "x"}}])
    assert [p.split(":")[0] for p in info.value.problems] == ["call #1 (inpaint)", "call #2 (inpaint)",
                                                              "call #3 (inpaint)"]
    with pytest.raises(PlanError, match="must be an object with a name"):
        plan_from_tool_calls([42])
