"""Fuzzing the validator with seeded random plans (hypothesis is not a dependency): whatever it
accepts uses only catalogued tools, with in-range arguments and no dangling or forward references,
checked by an oracle written independently of the validator; whatever it rejects comes with
problems. Single mutations of good plans are always rejected."""

import copy
import json
import math
import random
import re

import pytest

from agentic_edit.agent.plan import MAX_STEPS, Plan, PlanError, validate
from agentic_edit.agent.planners.offline import OfflinePlanner
from tests.agent_tools import sample_catalogue

TOOLS = sample_catalogue(future=True)
BY_NAME = {t.name: t for t in TOOLS}
AGENT = [t for t in TOOLS if t.agent]
JUNK_TOOLS = ["KSampler", "SaveImage", "exec", "", "inpaint ", "Inpaint", "eval", "os.system"]
TEXT_KINDS = {"string": {"string"}, "color": {"string", "color"}, "int": {"int"}, "float": {"float", "int"},
              "bool": {"bool"}}


# --- the oracle: what an accepted plan must satisfy, written without the validator's code --------
def source_kind(ref, index, steps, references, session):
    if ref == "image":
        return "image"
    m = re.fullmatch(r"reference(?:_(\d+))?", ref)
    if m:
        number = int(m.group(1) or 1)
        assert number >= 1 and (references is None or number <= references), ref
        return "image"
    if ref.startswith("session:"):
        assert session is not None and ref[8:] in session, ref
        return session[ref[8:]]
    step_id, output = ref.split(".", 1)
    earlier = [s for s in steps[:index] if s.id == step_id]
    assert len(earlier) == 1, f"{ref} is not an earlier step"
    kinds = {o.name: o.kind for o in BY_NAME[earlier[0].tool].outputs}
    assert output in kinds, ref
    return kinds[output]


def check_accepted(plan: Plan, references, session):
    steps = plan.steps
    assert 1 <= len(steps) <= MAX_STEPS
    ids = [s.id for s in steps]
    assert len(set(ids)) == len(ids)
    for index, step in enumerate(steps):
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", step.id) and step.id not in ("image", "reference", "session")
        tool = BY_NAME[step.tool]
        assert tool.agent
        visible = {a.name: a for a in tool.args if a.agent}
        assert not set(step.args) & set(step.inputs)
        for name, value in step.args.items():
            arg = visible[name]
            assert not arg.is_link
            if arg.kind == "int":
                assert type(value) is int
            elif arg.kind == "float":
                assert type(value) is float and math.isfinite(value)
            elif arg.kind == "bool":
                assert type(value) is bool
            else:
                assert type(value) is str
            if arg.kind in ("int", "float"):
                assert (arg.minimum is None or value >= arg.minimum) and (arg.maximum is None or value <= arg.maximum)
            if arg.kind == "choice" and not callable(arg.choices):
                assert value in arg.choices
        for name, ref in step.inputs.items():
            arg = visible[name]
            kind = source_kind(ref, index, steps, references, session)
            assert kind == arg.kind if arg.is_link else kind in TEXT_KINDS[arg.kind], (step, name, kind)
        for arg in visible.values():
            if arg.is_link and not arg.optional:
                assert arg.name in step.inputs
            if not arg.is_link and arg.default is not None:
                assert arg.name in step.args or arg.name in step.inputs
    assert plan.output is not None
    assert source_kind(plan.output, len(steps), steps, references, session) == "image"


# --- random plans ----------------------------------------------------------------------------
def good_value(rng, arg):
    if arg.kind in ("int", "float"):
        low = arg.minimum if arg.minimum is not None else -100
        high = arg.maximum if arg.maximum is not None else 100
        value = rng.uniform(low, high)
        value = min(max(round(value), math.ceil(low)), math.floor(high)) if arg.kind == "int" else value
        return rng.choice([value, str(value)]) if rng.random() < 0.2 else value
    if arg.kind == "choice":
        return rng.choice(list(arg.choices)) if not callable(arg.choices) else "anything"
    if arg.kind == "bool":
        return rng.choice([True, False, "true", "FALSE", 0, 1])
    return rng.choice(["a cup", "red", "#00ff00", "SALE", 2024, [255, 0, 0] if arg.kind == "color" else "x"])


def bad_value(rng):
    return rng.choice([None, -1e9, 1e9, 2.5, "abc", True, float("nan"), "s1.mask", "session:m", 2**40, "UPPER",
                       {"a": 1}, "x" * 10_001])


def bad_ref(rng, n_steps, index):
    later = f"s{rng.randint(index + 1, max(index + 1, n_steps))}.{rng.choice(['image', 'mask', 'boxes'])}"
    return rng.choice(["reference_3", "session:zz", f"s{n_steps + 2}.image", "s1.nope", "s1", "cup", 7, None, "",
                       "image.image", "s1.mask; rm -rf /", "session:m", later, later, later])


def random_plan(rng, noise: float, references, session):
    """A plan that is valid by construction, except that each choice goes wrong with odds ``noise``
    (and that it need not end with an image)."""
    wrong = lambda: rng.random() < noise  # noqa: E731
    n_steps = rng.randint(1, 6) if not wrong() else rng.choice([0, rng.randint(20, 30), rng.randint(1, 8)])
    available = [("image", "image")] + [(f"reference_{n}" if n > 1 else "reference", "image")
                                        for n in range(1, (references or 0) + 1)]
    available += [(f"session:{name}", kind) for name, kind in (session or {}).items()]
    steps = []
    for index in range(n_steps):
        tool = rng.choice(AGENT) if not wrong() else rng.choice(TOOLS + [None])
        args, inputs = {}, {}
        for arg in (tool.args if tool else ()):
            if arg.is_link:
                if arg.optional and rng.random() < 0.5 and not wrong():
                    continue
                fitting = [ref for ref, kind in available if kind == arg.kind]
                ref = rng.choice(fitting) if fitting and not wrong() else bad_ref(rng, n_steps, index)
                (inputs if not wrong() else args)[arg.name] = ref
            elif arg.agent or wrong():
                texts = [ref for ref, kind in available if kind in TEXT_KINDS[arg.kind]] if arg.kind != "choice" else []
                if texts and rng.random() < 0.2:
                    inputs[arg.name] = rng.choice(texts)
                elif rng.random() < 0.5 or (arg.default is None and not arg.optional):
                    args[arg.name] = good_value(rng, arg) if not wrong() else bad_value(rng)
        if wrong():
            args[rng.choice(["promt", "model", "font", "class_type"])] = "x"
        step_id = f"s{index + 1}" if not wrong() else rng.choice(["s1", "image", "9x", "a.b", "reference"])
        name = tool.name if tool else rng.choice(JUNK_TOOLS)
        steps.append({"id": step_id, "tool": name, "args": args, "inputs": inputs})
        available += [(f"{step_id}.{o.name}", o.kind) for o in (tool.outputs if tool else ())]
    plan = {"steps": steps}
    if rng.random() < 0.1:
        images = [ref for ref, kind in available if kind == "image"]
        plan["output"] = rng.choice(images) if not wrong() else bad_ref(rng, n_steps, n_steps)
    return plan


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.05, 0.3])
def test_whatever_is_accepted_is_safe(noise):
    rng = random.Random(noise)
    accepted = rejected = 0
    for _ in range(1200):
        references = rng.choice([None, 1, 2, 0])
        session = rng.choice([None, {"m": "mask"}])
        raw = random_plan(rng, noise, references, session)
        try:
            plan = validate(copy.deepcopy(raw), TOOLS, references=references, session=session)
        except PlanError as exc:
            assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
            rejected += 1
            continue
        check_accepted(plan, references, session)
        assert validate(plan, TOOLS, references=references, session=session) == plan
        assert validate(Plan.from_json(plan.to_json()), TOOLS, references=references, session=session) == plan
        accepted += 1
    # both branches are exercised (noise-free plans fail when they end with no image, or need a mask
    # before any step made one)
    least = {0.0: 350, 0.01: 300, 0.05: 100, 0.3: 3}[noise]
    assert accepted >= least and rejected >= 100, (accepted, rejected)


# --- single mutations of good plans ----------------------------------------------------------
GOOD_INSTRUCTIONS = [
    "remove the cup", "replace the cat with a dog", "make the cat black", 'write "SALE" at the top',
    "draw boxes around the cat", "add a hat to the cat", "make the cat look older",
    "remove the spoon, make the cup blue and write 'Hi' on the saucer",
]


def mutations(plan: dict, rng):
    """(name, mutated plan) pairs, each one mistake."""
    steps = plan["steps"]
    last = len(steps) - 1
    k = rng.randrange(len(steps))
    tool = BY_NAME[steps[k]["tool"]]

    def mutate(fn):
        copy_ = copy.deepcopy(plan)
        fn(copy_["steps"])
        return copy_

    yield "junk tool", mutate(lambda s: s[k].update(tool=rng.choice(JUNK_TOOLS)))
    yield "unknown arg", mutate(lambda s: s[k]["args"].update(bogus=1))
    hidden = [a.name for a in tool.args if not a.agent]
    if hidden:
        yield "hidden arg", mutate(lambda s: s[k]["args"].update({hidden[0]: "x"}))
    ranged = [a for a in tool.args if a.agent and a.kind in ("int", "float") and a.maximum is not None]
    if ranged:
        yield "out of range", mutate(lambda s: s[k]["args"].update({ranged[0].name: ranged[0].maximum + 1}))
    links = [n for n in steps[k]["inputs"]]
    if links:
        name = links[0]
        required = not next(a for a in tool.args if a.name == name).optional
        if required:
            yield "dropped input", mutate(lambda s: s[k]["inputs"].pop(name))
        yield "dangling ref", mutate(lambda s: s[k]["inputs"].update({name: "s99.mask"}))
        yield "literal input", mutate(lambda s: s[k]["inputs"].update({name: "the cup"}))
        yield "self ref", mutate(lambda s: s[k]["inputs"].update({name: f"{s[k]['id']}.image"}))
        if k < last:
            later = steps[last]
            out = BY_NAME[later["tool"]].outputs[0].name
            yield "forward ref", mutate(lambda s: s[k]["inputs"].update({name: f"{later['id']}.{out}"}))
    if len(steps) > 1:
        yield "duplicate id", mutate(lambda s: s[1].update(id=s[0]["id"]))
    yield "too many steps", mutate(lambda s: s.extend(copy.deepcopy(s[-1:]) * (MAX_STEPS + 1)))
    yield "no steps", mutate(lambda s: s.clear())


@pytest.mark.parametrize("instruction", GOOD_INSTRUCTIONS)
def test_single_mutations_of_a_good_plan_are_rejected(instruction):
    good = OfflinePlanner(TOOLS).plan(instruction).to_dict()
    assert validate(good, TOOLS)
    rng = random.Random(instruction)
    for _ in range(5):
        for name, bad in mutations(good, rng):
            with pytest.raises(PlanError) as info:
                validate(bad, TOOLS)
            assert info.value.problems, name
            json.dumps(info.value.problems)  # plain strings, ready to send back to an LLM
