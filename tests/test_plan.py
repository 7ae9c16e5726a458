"""The plan model and its validator: JSON round trips, normalisation, and an actionable message for
every kind of bad plan (the LLM planner repairs its plan from these messages alone)."""

import json

import pytest

from agentic_edit.agent.plan import MAX_STEPS, Plan, PlanError, Step, validate
from tests.agent_tools import sample_catalogue

TOOLS = sample_catalogue()


def step(step_id, tool, args=None, **inputs):
    return {"id": step_id, "tool": tool, "args": args or {}, "inputs": inputs}


def problems_of(plan, tools=TOOLS, **kwargs) -> list[str]:
    with pytest.raises(PlanError) as info:
        validate(plan, tools, **kwargs)
    assert str(info.value).startswith("the plan is not valid:")
    for p in info.value.problems:
        assert p in str(info.value)
    return info.value.problems


def only_problem(plan, **kwargs) -> str:
    problems = problems_of(plan, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


REPLACE = {"steps": [step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                     step("s2", "inpaint", {"prompt": "a red mug"}, image="image", mask="s1.mask")],
           "instruction": "replace the cup with a red mug", "notes": "two steps"}


# --- the model -------------------------------------------------------------------------------
def test_plan_json_round_trip():
    plan = Plan.from_dict(REPLACE)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.tool_names == ["segment_by_text", "inpaint"]
    assert again.step("s2").inputs == {"image": "image", "mask": "s1.mask"}
    with pytest.raises(KeyError, match="no step 's9'"):
        plan.step("s9")


def test_a_bare_list_of_steps_is_a_plan():
    assert Plan.from_dict(REPLACE["steps"]).tool_names == ["segment_by_text", "inpaint"]


def test_args_and_inputs_may_be_left_out_of_a_step():
    plan = Plan.from_dict({"steps": [{"id": "s1", "tool": "invert_mask"}]})
    assert plan.steps == [Step("s1", "invert_mask", {}, {})]


@pytest.mark.parametrize("data, expected", [
    ("not json", "not valid JSON"),
    ('{"steps": {}}', 'needs "steps"'),
    ('{"steps": [], "extra": 1}', "unknown field 'extra'"),
    ('{"steps": [42]}', "step #1 must be an object"),
    ('{"steps": [{"tool": "inpaint"}]}', 'needs an "id" such as "s1"'),
    ('{"steps": [{"id": "s1"}]}', 'step s1 needs a "tool"'),
    ('{"steps": [{"id": "s1", "tool": "inpaint", "args": []}]}', '"args" must be an object'),
    ('{"steps": [{"id": "s1", "tool": "inpaint", "inputs": "image"}]}', '"inputs" must be an object'),
    ('{"steps": [{"id": "s1", "tool": "inpaint", "kwargs": {}}]}', "unknown field 'kwargs'"),
    ('{"steps": [], "output": 3}', '"output" must be a reference'),
    ("[1, 2]", "step #2 must be an object"),
    ("3", "a plan is a JSON object"),
])
def test_structural_mistakes_are_reported(data, expected):
    with pytest.raises(PlanError, match=expected):
        validate(data, TOOLS)


def test_a_plan_built_in_code_gets_the_same_structural_checks():
    with pytest.raises(PlanError, match='needs an "id"'):
        validate(Plan([Step(7, "invert_mask")]), TOOLS)


# --- normalisation ---------------------------------------------------------------------------
def test_validate_fills_defaults_and_sets_the_output():
    plan = validate(REPLACE, TOOLS)
    inpaint = plan.step("s2")
    assert inpaint.args == {"prompt": "a red mug", "negative_prompt": "", "strength": 1.0, "steps": 30, "seed": 0}
    assert "model" not in inpaint.args  # hidden from the planner: left to the compiler
    assert plan.output == "s2.image"
    assert plan.instruction == REPLACE["instruction"] and plan.notes == "two steps"
    assert validate(plan, TOOLS) == plan  # idempotent


def test_lossless_coercions():
    plan = validate({"steps": [
        step("s1", "segment_by_text", {"query": 2024}, image="image"),
        step("s2", "inpaint", {"strength": "0.5", "steps": "40", "seed": 7.0, "prompt": "x"}, image="image",
             mask="s1.mask"),
        step("s3", "render_boxes", {"line_width": 3.0, "show_labels": "False"}, image="s2.image"),
        step("s4", "recolor", {"color": [255, 0, 0]}, image="s3.image", mask="s1.mask"),
        step("s5", "combine_masks", {"operation": "SUBTRACT"}, mask_a="s1.mask", mask_b="s1.mask"),
        step("s6", "draw_text", {"text": ["a", "b"], "align": "Left"}, image="s4.image", mask="s5.mask"),
    ]}, TOOLS)
    assert plan.step("s1").args["query"] == "2024"
    assert plan.step("s2").args["strength"] == 0.5 and isinstance(plan.step("s2").args["strength"], float)
    assert plan.step("s2").args["steps"] == 40 and plan.step("s2").args["seed"] == 7
    assert plan.step("s3").args == {"line_width": 3, "show_labels": False}
    assert plan.step("s4").args["color"] == "255, 0, 0"
    assert plan.step("s5").args["operation"] == "subtract"
    assert plan.step("s6").args["text"] == '["a", "b"]' and plan.step("s6").args["align"] == "left"
    assert plan.output == "s6.image"


@pytest.mark.parametrize("name, value, expected", [
    ("steps", 2.5, "is 2.5; it must be a whole number from 1 to 150"),
    ("steps", True, "is true; it must be a whole number"),
    ("steps", "ten", "it must be a whole number"),
    ("strength", "strong", "is \"strong\"; it must be a number from 0 to 1"),
    ("strength", float("nan"), "must be a finite number"),
    ("strength", 1e400, "must be a finite number"),
    ("prompt", None, "is null"),
    ("prompt", True, "it must be text"),
    ("prompt", "x" * 10_001, "at most 10000 are allowed"),
])
def test_lossy_or_wrong_values_are_refused(name, value, expected):
    plan = {"steps": [step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                      step("s2", "inpaint", {name: value}, image="image", mask="s1.mask")]}
    problem = only_problem(plan)
    assert problem.startswith(f"step s2 (inpaint): argument {name!r} ")
    assert expected in problem


def test_bool_accepts_words_and_bits_only():
    good = validate([step("s1", "render_boxes", {"show_labels": 0}, image="image")], TOOLS)
    assert good.step("s1").args["show_labels"] is False
    assert "true or false" in only_problem([step("s1", "render_boxes", {"show_labels": "yes"}, image="image")])


def test_node_ids_and_reference_1_are_normalised():
    plan = validate([step("s1", "AgenticEditTestSegmentByText", {"query": "cup"}, image="reference_1"),
                     step("s2", "remove_object", image="image", mask="s1.mask")], TOOLS, references=1)
    assert plan.tool_names == ["segment_by_text", "remove_object"]
    assert plan.step("s1").inputs["image"] == "reference"


def test_explicit_output():
    plan = dict(REPLACE, output="image")
    assert validate(plan, TOOLS).output == "image"
    assert "must be an image, but 's1.mask' is a mask" in only_problem(dict(REPLACE, output="s1.mask"))
    assert "is not a reference" in only_problem(dict(REPLACE, output="the result"))
    assert "step 's7', which does not exist" in only_problem(dict(REPLACE, output="s7.image"))


def test_a_text_output_may_feed_a_text_argument():
    plan = validate([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                     step("s2", "write_prompts", {"instruction": "a red mug"}, image="image", mask="s1.mask"),
                     step("s3", "inpaint", {}, image="image", mask="s1.mask", prompt="s2.positive",
                          negative_prompt="s2.negative")], TOOLS)
    assert plan.step("s3").inputs["prompt"] == "s2.positive"
    assert "prompt" not in plan.step("s3").args  # wired, so no default is filled in


# --- every kind of mistake -------------------------------------------------------------------
def test_empty_plan():
    assert only_problem({"steps": []}) == "the plan has no steps; an edit needs at least one tool step"


def test_too_many_steps():
    chain = [step("s1", "segment_by_text", {"query": "cup"}, image="image")]
    chain += [step(f"s{i}", "invert_mask", mask=f"s{i - 1}.mask") for i in range(2, 50)]
    chain.append(step("s50", "recolor", image="image", mask="s49.mask"))
    assert "the plan has 50 steps; at most 24 are allowed" in only_problem(chain)
    assert validate(chain[:MAX_STEPS - 1] + [step("s99", "recolor", image="image", mask="s2.mask")], TOOLS)


@pytest.mark.parametrize("tool", ["KSampler", "SaveImage", "exec", "CheckpointLoaderSimple", "__import__"])
def test_only_catalogued_tools_pass(tool):
    problem = only_problem([step("s1", tool, {"code": "import os"}, image="image")])
    assert problem.startswith(f"step s1: unknown tool {tool!r}")
    assert "a plan may use only these tools: ground, segment_by_text" in problem
    assert "debug_dump" not in problem  # a tool hidden from the planner is not offered


def test_unknown_tool_suggests_the_nearest_name():
    assert "unknown tool 'inpant' (did you mean 'inpaint'?)" in only_problem([step("s1", "inpant", image="image")])


def test_a_tool_hidden_from_the_planner_is_refused():
    assert "unknown tool 'debug_dump'" in only_problem([step("s1", "debug_dump", image="image")])


def test_unknown_argument_names_the_real_ones():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "inpaint", {"promt": "a mug"}, image="image", mask="s1.mask")])
    assert problem == ("step s2 (inpaint): tool 'inpaint' has no argument 'promt' (did you mean 'prompt'?); "
                       "its inputs are: image (an image), mask (a mask); its arguments are: prompt, "
                       "negative_prompt, strength, steps, seed")


def test_unknown_input():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "remove_object", image="image", mask="s1.mask", msk="s1.mask")])
    assert "tool 'remove_object' has no input 'msk' (did you mean 'mask'?)" in problem


def test_hidden_argument_is_refused():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup", "model": "big"}, image="image"),
                            step("s2", "remove_object", image="image", mask="s1.mask")])
    assert problem == "step s1 (segment_by_text): 'model' is a setting of the node that the plan may not set; remove it"


def test_missing_connection_suggests_what_to_connect():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "remove_object", image="image")])
    assert problem == ("step s2 (remove_object) needs input 'mask' (a mask): give a reference such as "
                       "\"inputs\": {\"mask\": \"s1.mask\"}")


def test_missing_connection_with_nothing_to_connect_names_the_tools_that_make_one():
    problem = only_problem([step("s1", "remove_object", image="image")])
    assert "no earlier step makes a mask; add a step that does first (segment_by_text, segment" in problem


def test_missing_required_value_without_default():
    problem = only_problem([step("s1", "make_grid", image="image")])
    assert problem == "step s1 (make_grid) needs argument 'columns': a whole number from 1 to 8 (Columns (no default).)"


def test_out_of_range():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "inpaint", {"strength": 1.5}, image="image", mask="s1.mask")])
    assert problem == "step s2 (inpaint): argument 'strength' is 1.5, out of range: it must be a number from 0 to 1"


def test_choice_not_allowed():
    problem = only_problem([step("s1", "place_region", {"position": "upstairs"}, image="image"),
                            step("s2", "draw_text", {"text": "hi"}, image="image", boxes="s1.boxes")])
    assert "argument 'position' is \"upstairs\", which is not allowed; it must be one of 'top', 'bottom'" in problem


def test_connection_given_as_a_literal():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "remove_object", {"mask": "s1.mask"}, image="image")])
    assert problem == ("step s2 (remove_object): 'mask' is a connection (a mask), so it goes in inputs, not args: "
                       "give a reference such as \"inputs\": {\"mask\": \"s1.mask\"}")


def test_literal_given_as_a_connection():
    problem = only_problem([step("s1", "segment_by_text", image="image", query="the cup"),
                            step("s2", "remove_object", image="image", mask="s1.mask")])
    assert problem == ("step s1 (segment_by_text): inputs['query'] = \"the cup\" is not a reference; a literal value "
                       "goes in args (\"args\": {\"query\": \"the cup\"}); inputs hold references such as 'image' or "
                       "'s1.mask'")


def test_reference_written_in_args():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "inpaint", {"prompt": "s1.boxes"}, image="image", mask="s1.mask")])
    assert "args['prompt'] = 's1.boxes' looks like a reference; references go in inputs" in problem


def test_both_in_args_and_inputs():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "write_prompts", {}, image="image", mask="s1.mask"),
                            step("s3", "inpaint", {"prompt": "mug"}, image="image", mask="s1.mask",
                                 prompt="s2.positive")])
    assert problem == "step s3 (inpaint): 'prompt' is given both in args and in inputs; keep one"


def test_reference_to_unknown_step_and_output():
    problems = problems_of([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "remove_object", image="image", mask="s9.mask"),
                            step("s3", "remove_object", image="image", mask="s1.masks")])
    assert problems == [
        "step s2 (remove_object): input 'mask' refers to step 's9', which does not exist; the steps before it are: s1",
        "step s3 (remove_object): input 'mask' refers to 's1.masks', but step s1 (segment_by_text) has no output "
        "'masks'; its outputs are: mask (a mask), boxes (boxes)"]


def test_reference_of_the_wrong_kind():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "remove_object", image="s1.mask", mask="s1.mask")])
    assert problem == ("step s2 (remove_object): input 'image' needs an image, but 's1.mask' is a mask; "
                       "what can be connected here: image")
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s2", "inpaint", image="image", mask="s1.mask", prompt="s1.mask")])
    assert "input 'prompt' needs text, but 's1.mask' is a mask" in problem


def test_forward_reference_and_cycle():
    problems = problems_of([step("s1", "remove_object", image="image", mask="s2.mask"),
                            step("s2", "segment_by_text", {"query": "cup"}, image="s1.image")])
    assert problems == ["step s1 (remove_object): input 'mask' refers to 's2.mask', but step s2 comes later; a step "
                        "can only use outputs of the steps before it (put s2 first)"]
    problem = only_problem([step("s1", "invert_mask", mask="s1.mask"),
                            step("s2", "recolor", image="image", mask="s1.mask")])
    assert problem == ("step s1 (invert_mask): input 'mask' refers to its own output 's1.mask'; a step can only use "
                       "outputs of earlier steps")


def test_duplicate_and_bad_step_ids():
    problems = problems_of([step("s1", "segment_by_text", {"query": "cup"}, image="image"),
                            step("s1", "segment_by_text", {"query": "mug"}, image="image"),
                            step("image", "remove_object", image="image", mask="s1.mask"),
                            step("s.3", "remove_object", image="image", mask="s1.mask")])
    assert "step id 's1' is used twice; every step needs its own id" in problems
    assert any(p.startswith("step id 'image' is not allowed") for p in problems)
    assert any(p.startswith("step id 's.3' is not allowed") for p in problems)


def test_reference_images_are_counted():
    plan = [step("s1", "segment_by_text", {"query": "cup"}, image="image"),
            step("s2", "reference_inpaint", image="image", mask="s1.mask", reference="reference_2")]
    assert validate(plan, TOOLS, references=2).step("s2").inputs["reference"] == "reference_2"
    assert "refers to 'reference_2', but only 1 reference image(s) were given: reference" in only_problem(
        plan, references=1)
    assert "but no reference image was given" in only_problem(plan, references=0)
    assert validate(plan, TOOLS)  # references=None: not checked


def test_session_references_need_a_session():
    plan = [step("s1", "remove_object", image="image", mask="session:cup_mask")]
    assert "this run has no session memory" in only_problem(plan)
    assert validate(plan, TOOLS, session={"cup_mask": "mask"}).step("s1").inputs["mask"] == "session:cup_mask"
    assert "the session has no artifact 'cup_mask'; it has: cat_mask" in only_problem(
        plan, session={"cat_mask": "mask"})
    assert "needs a mask, but 'session:cup_mask' is an image" in only_problem(plan, session={"cup_mask": "image"})


def test_a_plan_must_make_an_image():
    problem = only_problem([step("s1", "segment_by_text", {"query": "cup"}, image="image")])
    assert problem.startswith("the plan makes no image") and "remove_object" in problem


def test_every_problem_is_reported_at_once():
    problems = problems_of([step("s1", "KSampler", {"steps": 20}),
                            step("s2", "inpaint", {"strength": 9, "promt": "x"}, image="s1.image", mask="s3.mask"),
                            step("s2", "recolor", {"color": ""}, image="reference", mask="s2.mask")], references=0)
    text = "\n".join(problems)
    for expected in ("unknown tool 'KSampler'", "'strength' is 9, out of range", "no argument 'promt'",
                     "refers to step 's3', which does not exist",
                     "used twice", "no reference image was given", "argument 'color' is \"\""):
        assert expected in text, expected
    # references to the unknown tool's step are not reported a second time
    assert not any("s1.image" in p for p in problems)


def test_real_catalogue_plan_and_its_hidden_settings():
    from agentic_edit.catalogue import all_tools

    plan = validate([step("s1", "segment_by_text", {"query": "cat", "grow": "4"}, image="image"),
                     step("s2", "recolor", {"color": "black"}, image="image", mask="s1.mask")], all_tools())
    assert plan.step("s1").args["grow"] == 4 and "grounding_model" not in plan.step("s1").args
    assert plan.output == "s2.image"
    problem = only_problem([step("s1", "segment_by_text", {"query": "cat", "sam_model": "x"}, image="image"),
                            step("s2", "recolor", image="image", mask="s1.mask")], tools=all_tools())
    assert "'sam_model' is a setting of the node that the plan may not set" in problem
    assert "unknown tool 'record_step'" in only_problem(
        [step("s1", "record_step", {"run_id": "x", "step": "s1", "tool": "t"})], tools=all_tools())


def test_plan_error_is_a_value_error_with_its_problems():
    err = PlanError(["a", "b"])
    assert isinstance(err, ValueError) and err.problems == ["a", "b"] and str(err) == "the plan is not valid:\n- a\n- b"
    assert json.loads(Plan([Step("s1", "invert_mask", {}, {"mask": "x"})], output="s1.mask").to_json())["output"] \
        == "s1.mask"


def test_the_agent_imports_no_engine_node_or_comfyui():
    """Planning with the real catalogue loads neither engines nor nodes nor ComfyUI, and computes no
    choices list (those import engines)."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
from tests.pack import import_pack
import_pack()
from agentic_edit.agent import evaluate, plan, tool_schema
from agentic_edit.agent.planners import get_planner
tool_schema.plan_schema(); tool_schema.tool_functions()
p = get_planner("offline").plan("make the cat black and write 'Hi' at the top")
plan.validate(p)
heavy = sorted(m for m in sys.modules if m.startswith(("agentic_edit.engines", "agentic_edit.nodes", "comfy",
                                                      "folder_paths", "torch", "transformers", "diffusers")))
print(heavy)
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
