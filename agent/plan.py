"""A plan: the steps of one edit, each a catalogued tool with literal ``args`` and ``inputs`` wired to
the instruction's images or to earlier steps' outputs. ``validate`` is the gate every plan passes
before anything runs, whoever wrote it (an LLM, the rules planner, a user's JSON).

References (the values of ``Step.inputs``, and ``Plan.output``):

* ``"image"``: the image being edited;
* ``"reference"``, ``"reference_2"``, ...: the reference images given with the instruction;
* ``"<step_id>.<output>"``: an output of an earlier step, e.g. ``"s1.mask"``;
* ``"session:<artifact>"``: an artifact kept by session memory (a mask or region of an earlier turn);
  allowed only when ``validate`` is given the session's artifacts. Artifact names have no ".", so
  a reference with a "." is always a step output.

Only tools of the catalogue that the planner may use (``Tool.agent``) with arguments it may set
(``Arg.agent``) pass; anything else (a ``KSampler``, an ``exec``, a hidden option) is refused
with a message that says what is allowed, so an LLM can repair its plan from the message alone.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..catalogue.spec import Arg, Tool
from .arg_values import ArgValueError, coerce_value, describe_kind, kind_noun, show_value

MAX_STEPS = 24
STEP_ID_PATTERN = r"[A-Za-z][A-Za-z0-9_]{0,31}"
REFERENCE_PATTERN = (r"^(image|reference(_[1-9][0-9]?)?|session:[A-Za-z0-9_][A-Za-z0-9_\-/]{0,127}|"
                     rf"{STEP_ID_PATTERN}\.[A-Za-z_][A-Za-z0-9_]*)$")
INPUT_IMAGE = "image"
SESSION_PREFIX = "session:"
_STEP_ID = re.compile(rf"^{STEP_ID_PATTERN}$")
_REFERENCE = re.compile(REFERENCE_PATTERN)
_RESERVED_IDS = re.compile(r"^(image|reference(_\d+)?|session|output)$", re.IGNORECASE)
_STEP_FIELDS = ("id", "tool", "args", "inputs")
_PLAN_FIELDS = ("steps", "instruction", "notes", "output")

# Which outputs may feed a literal-kind argument through a link (ComfyUI turns a widget into an
# input): write_prompts' "positive" string into inpaint's "prompt", for example.
_VALUE_LINKS = {"string": {"string"}, "color": {"string", "color"}, "int": {"int"},
                "float": {"float", "int"}, "bool": {"bool"}}


class PlanError(ValueError):
    """A plan that cannot run. ``problems`` lists every mistake found, one actionable sentence each."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("the plan is not valid:\n" + "\n".join(f"- {p}" for p in self.problems))


@dataclass
class Step:
    id: str
    tool: str
    args: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "tool": self.tool, "args": dict(self.args), "inputs": dict(self.inputs)}


@dataclass
class Plan:
    steps: list[Step]
    instruction: str = ""
    notes: str = ""
    output: str | None = None  # the reference whose image the edit returns; set by validate

    @property
    def tool_names(self) -> list[str]:
        return [s.tool for s in self.steps]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"the plan has no step {step_id!r}")

    def to_dict(self) -> dict:
        data = {"steps": [s.to_dict() for s in self.steps], "instruction": self.instruction, "notes": self.notes}
        if self.output is not None:
            data["output"] = self.output
        return data

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data) -> "Plan":
        """A plan from its JSON structure (a bare list of steps is taken too); structural mistakes
        (a step that is not an object, args that are not an object, ...) raise ``PlanError``."""
        if isinstance(data, list):
            data = {"steps": data}
        if not isinstance(data, Mapping):
            raise PlanError([f"a plan is a JSON object {{\"steps\": [...]}}, not {type(data).__name__}"])
        problems = [f"the plan has an unknown field {k!r}; a plan has: {', '.join(_PLAN_FIELDS)}"
                    for k in data if k not in _PLAN_FIELDS]
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list):
            raise PlanError(problems + ["the plan needs \"steps\": a list of {\"id\", \"tool\", \"args\", \"inputs\"}"])
        steps = []
        for n, raw in enumerate(raw_steps, 1):
            step = _step_from_dict(raw, n, problems)
            if step is not None:
                steps.append(step)
        for name in ("instruction", "notes"):
            if not isinstance(data.get(name, ""), str):
                problems.append(f"the plan's {name!r} must be text")
        output = data.get("output")
        if output is not None and not isinstance(output, str):
            problems.append("the plan's \"output\" must be a reference such as \"s3.image\"")
        if problems:
            raise PlanError(problems)
        return cls(steps, data.get("instruction", ""), data.get("notes", ""), output)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise PlanError([f"the plan is not valid JSON ({exc})"]) from None
        return cls.from_dict(data)


def _step_from_dict(raw, n: int, problems: list[str]) -> Step | None:
    where = f"step #{n}"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be an object {{\"id\", \"tool\", \"args\", \"inputs\"}}, "
                        f"not {type(raw).__name__}")
        return None
    if isinstance(raw.get("id"), str):
        where = f"step {raw['id']}"
    problems.extend(f"{where} has an unknown field {k!r}; a step has: {', '.join(_STEP_FIELDS)}"
                    for k in raw if k not in _STEP_FIELDS)
    step_id, tool = raw.get("id"), raw.get("tool")
    args, inputs = raw.get("args", {}), raw.get("inputs", {})
    ok = True
    if not isinstance(step_id, str):
        problems.append(f"{where} needs an \"id\" such as \"s{n}\" (text)")
        ok = False
    if not isinstance(tool, str):
        problems.append(f"{where} needs a \"tool\": the name of a catalogued tool")
        ok = False
    for name, value in (("args", args), ("inputs", inputs)):
        if not isinstance(value, Mapping):
            problems.append(f"{where}: \"{name}\" must be an object of name: value")
            ok = False
    return Step(step_id, tool, dict(args), dict(inputs)) if ok else None


def as_plan(plan) -> Plan:
    """A ``Plan`` from a ``Plan``, its dict or its JSON text, its structure checked."""
    if isinstance(plan, Plan):  # built in code: check the field types as if it came as JSON
        steps = [{"id": s.id, "tool": s.tool, "args": s.args, "inputs": s.inputs} for s in plan.steps]
        return Plan.from_dict({"steps": steps, "instruction": plan.instruction, "notes": plan.notes,
                               "output": plan.output})
    if isinstance(plan, (str, bytes)):
        return Plan.from_json(plan)
    return Plan.from_dict(plan)


def agent_tools(tools: Iterable[Tool] | None = None) -> list[Tool]:
    """The tools a planner may use, in catalogue order (the whole catalogue when ``tools`` is None)."""
    if tools is None:
        from ..catalogue import all_tools

        tools = all_tools()
    return [t for t in tools if t.agent]


@dataclass(frozen=True)
class _Source:
    kind: str | None  # None: made by a step whose tool is unknown (already reported)
    problem: str | None = None


class _Checker:
    """Checks one plan; collects every problem instead of stopping at the first."""

    def __init__(self, plan: Plan, tools: list[Tool], references: int | None, session: Mapping[str, str] | None):
        self.plan, self.references, self.session = plan, references, session
        self.tools = {t.name: t for t in tools}
        self.by_node_id = {t.node_id: t for t in tools}
        self.position = {}  # step id -> index of its first occurrence
        for i, s in enumerate(plan.steps):
            self.position.setdefault(s.id, i)
        self.step_tools: dict[str, Tool | None] = {}
        self.problems: list[str] = []

    def run(self) -> Plan:
        seen = set()
        for s in self.plan.steps:
            if not _STEP_ID.match(s.id) or _RESERVED_IDS.match(s.id):
                self.problems.append(f"step id {s.id!r} is not allowed: use a short name of letters, digits and _ "
                                     "that starts with a letter, such as 's1' ('image', 'reference' and 'session' "
                                     "are taken)")
            if s.id in seen:
                self.problems.append(f"step id {s.id!r} is used twice; every step needs its own id")
            seen.add(s.id)
        steps = [self._step(i, s) for i, s in enumerate(self.plan.steps)]
        output = self._output()
        if self.problems:
            raise PlanError(self.problems)
        return Plan(steps, self.plan.instruction, self.plan.notes, output)

    # --- one step ---------------------------------------------------------------------------
    def _step(self, index: int, step: Step) -> Step:
        where = f"step {step.id}"
        tool = self._tool(where, step.tool)
        self.step_tools.setdefault(step.id, tool)
        if tool is None:
            return step
        where = f"step {step.id} ({tool.name})"
        visible = {a.name: a for a in tool.args if a.agent}
        hidden = {a.name for a in tool.args if not a.agent}
        args, inputs = {}, {}
        for name, value in step.args.items():
            arg = self._arg(where, tool, visible, hidden, name, "argument")
            if arg is None:
                continue
            if name in step.inputs:
                self.problems.append(f"{where}: {name!r} is given both in args and in inputs; keep one")
            elif arg.is_link:
                self.problems.append(f"{where}: {name!r} is a connection ({kind_noun(arg.kind)}), so it goes in "
                                     f"inputs, not args: {self._example(index, arg)}")
            elif _looks_like_reference(value, self.position):
                self.problems.append(f"{where}: args[{name!r}] = {value!r} looks like a reference; references go in "
                                     f"inputs (\"inputs\": {{\"{name}\": \"{value}\"}}), args hold literal values")
            else:
                try:
                    args[name] = coerce_value(arg, value)
                except ArgValueError as exc:
                    self.problems.append(f"{where}: argument {name!r} {exc}")
        for name, ref in step.inputs.items():
            arg = self._arg(where, tool, visible, hidden, name, "input")
            if arg is None:
                continue
            if not isinstance(ref, str) or not _REFERENCE.match(ref):
                literal = show_value(ref)
                if arg.is_link:
                    self.problems.append(f"{where}: inputs[{name!r}] = {literal} is not a reference; "
                                         f"{self._example(index, arg)}")
                else:
                    self.problems.append(f"{where}: inputs[{name!r}] = {literal} is not a reference; a literal value "
                                         f"goes in args (\"args\": {{\"{name}\": {literal}}}); inputs hold references "
                                         f"such as 'image' or 's1.mask'")
                continue
            ref = _canonical(ref)
            source = self._resolve(ref, index)
            if source.problem:
                self.problems.append(f"{where}: input {name!r} {source.problem}")
            elif source.kind is not None and not _fits(arg, source.kind):
                self.problems.append(f"{where}: input {name!r} needs {kind_noun(arg.kind)}, but {ref!r} is "
                                     f"{kind_noun(source.kind)}; {self._available(index, arg)}")
            inputs[name] = ref
        for arg in visible.values():  # what was left out: defaults, or a problem when there is none
            if arg.name in args or arg.name in inputs or arg.name in step.args or arg.name in step.inputs:
                continue  # given (a bad value is reported above, not again as missing)
            if arg.is_link:
                if not arg.optional:
                    self.problems.append(f"{where} needs input {arg.name!r} ({kind_noun(arg.kind)}): "
                                         f"{self._example(index, arg)}")
            elif arg.default is not None:
                args[arg.name] = arg.default
            elif not arg.optional:
                self.problems.append(f"{where} needs argument {arg.name!r}: {describe_kind(arg)} ({arg.description})")
        order = [a.name for a in tool.args]
        return Step(step.id, tool.name, {k: args[k] for k in order if k in args},
                    {k: inputs[k] for k in order if k in inputs})

    def _tool(self, where: str, name: str) -> Tool | None:
        tool = self.tools.get(name) or self.by_node_id.get(name)
        if tool is not None:
            return tool
        hint = difflib.get_close_matches(name, list(self.tools), n=1, cutoff=0.6)
        guess = f" (did you mean {hint[0]!r}?)" if hint else ""
        self.problems.append(f"{where}: unknown tool {name!r}{guess}; a plan may use only these tools: "
                             f"{', '.join(self.tools)} (no other node types)")
        return None

    def _arg(self, where, tool, visible, hidden, name, what) -> Arg | None:
        if name in visible:
            return visible[name]
        if name in hidden:
            self.problems.append(f"{where}: {name!r} is a setting of the node that the plan may not set; remove it")
            return None
        hint = difflib.get_close_matches(name, list(visible), n=1, cutoff=0.6)
        guess = f" (did you mean {hint[0]!r}?)" if hint else ""
        links = [f"{a.name} ({kind_noun(a.kind)})" for a in visible.values() if a.is_link]
        values = [a.name for a in visible.values() if not a.is_link]
        self.problems.append(f"{where}: tool {tool.name!r} has no {what} {name!r}{guess}; its inputs are: "
                             f"{', '.join(links) or 'none'}; its arguments are: {', '.join(values) or 'none'}")
        return None

    # --- references -------------------------------------------------------------------------
    def _resolve(self, ref: str, index: int) -> _Source:
        if ref == INPUT_IMAGE:
            return _Source("image")
        if ref.startswith("reference"):
            number = int(ref.split("_")[1]) if "_" in ref else 1
            if self.references is not None and number > self.references:
                given = ("no reference image was given" if self.references == 0 else
                         f"only {self.references} reference image(s) were given: "
                         + ", ".join(_reference_name(n) for n in range(1, self.references + 1)))
                return _Source(None, f"refers to {ref!r}, but {given}")
            return _Source("image")
        if ref.startswith(SESSION_PREFIX):
            name = ref[len(SESSION_PREFIX):]
            if self.session is None:
                return _Source(None, f"refers to {ref!r}, but this run has no session memory")
            if name not in self.session:
                return _Source(None, f"refers to {ref!r}, but the session has no artifact {name!r}; it has: "
                                     f"{', '.join(sorted(self.session)) or 'nothing yet'}")
            return _Source(self.session[name])
        step_id, output = ref.split(".", 1)
        position = self.position.get(step_id)
        if position is None:
            before = ", ".join(s.id for s in self.plan.steps[:index]) or "none (use 'image', the input image)"
            return _Source(None, f"refers to step {step_id!r}, which does not exist; the steps before it are: {before}")
        if position == index:
            return _Source(None, f"refers to its own output {ref!r}; a step can only use outputs of earlier steps")
        if position > index:
            return _Source(None, f"refers to {ref!r}, but step {step_id} comes later; a step can only use outputs "
                                 f"of the steps before it (put {step_id} first)")
        tool = self.step_tools.get(step_id)
        if tool is None:
            return _Source(None)
        for out in tool.outputs:
            if out.name == output:
                return _Source(out.kind)
        outs = ", ".join(f"{o.name} ({kind_noun(o.kind)})" for o in tool.outputs)
        return _Source(None, f"refers to {ref!r}, but step {step_id} ({tool.name}) has no output {output!r}; "
                             f"its outputs are: {outs}")

    def _sources(self, index: int, kinds: set[str]) -> list[str]:
        """References to everything of ``kinds`` available before step ``index``."""
        found = []
        if "image" in kinds:
            found.append(INPUT_IMAGE)
            found += [_reference_name(n) for n in range(1, (self.references or 0) + 1)]
        for s in self.plan.steps[:index]:
            tool = self.step_tools.get(s.id)
            found += [f"{s.id}.{o.name}" for o in (tool.outputs if tool else ()) if o.kind in kinds]
        return found

    def _available(self, index: int, arg: Arg) -> str:
        kinds = {arg.kind} if arg.is_link else _VALUE_LINKS.get(arg.kind, set())
        found = self._sources(index, kinds)
        if found:
            return f"what can be connected here: {', '.join(found)}"
        makers = [t.name for t in self.tools.values() if any(o.kind in kinds for o in t.outputs)]
        return (f"no earlier step makes {kind_noun(arg.kind)}; add a step that does first"
                + (f" ({', '.join(makers)})" if makers else ""))

    def _example(self, index: int, arg: Arg) -> str:
        found = self._sources(index, {arg.kind})
        if found:
            return f"give a reference such as \"inputs\": {{\"{arg.name}\": \"{found[-1]}\"}}"
        return self._available(index, arg)

    def _output(self) -> str | None:
        end = len(self.plan.steps)
        if self.plan.output is not None:
            ref = self.plan.output
            if not _REFERENCE.match(ref):
                self.problems.append(f"the plan's output {ref!r} is not a reference; "
                                     "name an image such as \"s3.image\"")
                return ref
            ref = _canonical(ref)
            source = self._resolve(ref, end)
            if source.problem:
                self.problems.append(f"the plan's output {source.problem}")
            elif source.kind is not None and source.kind != "image":
                self.problems.append(f"the plan's output must be an image, but {ref!r} is {kind_noun(source.kind)}")
            return ref
        for s in reversed(self.plan.steps):
            tool = self.step_tools.get(s.id)
            if tool is None:
                return None  # an unknown tool, already reported: the output cannot be known
            for out in tool.outputs:
                if out.kind == "image":
                    return f"{s.id}.{out.name}"
        if self.plan.steps:
            makers = [t.name for t in self.tools.values() if any(o.kind == "image" for o in t.outputs)]
            self.problems.append("the plan makes no image: the edit returns the image of its last image-making step; "
                                 f"end with one of: {', '.join(makers)}")
        return None


def _fits(arg: Arg, kind: str) -> bool:
    if arg.is_link:
        return kind == arg.kind
    return kind in _VALUE_LINKS.get(arg.kind, ())


def _canonical(ref: str) -> str:
    return "reference" if ref == "reference_1" else ref


def _reference_name(number: int) -> str:
    return "reference" if number == 1 else f"reference_{number}"


def _looks_like_reference(value, positions: Mapping[str, int]) -> bool:
    """``"s1.mask"`` or ``"session:x"`` written in args: a reference put in the wrong place (not just
    text that has a dot)."""
    if not isinstance(value, str) or not _REFERENCE.match(value):
        return False
    return value.startswith(SESSION_PREFIX) or "." in value and value.split(".", 1)[0] in positions


def validate(plan, tools: Iterable[Tool] | None = None, *, references: int | None = None,
             session: Mapping[str, str] | None = None, max_steps: int = MAX_STEPS) -> Plan:
    """The plan, checked against the catalogue and normalised, or ``PlanError`` listing every problem.

    ``plan`` is a ``Plan``, its dict or its JSON text; ``tools`` the catalogue (all tools when None;
    only ``agent`` tools are usable). ``references`` is how many reference images came with the
    instruction (None: not checked). ``session`` maps the names of session artifacts to their kinds
    (None: the plan may not use session memory).

    The returned plan is a new one: tool names in catalogue spelling, literal args coerced where
    nothing is lost (``arg_values``), every agent argument that has a default filled in (arguments
    hidden from the planner are left to the compiler), ``reference_1`` written ``reference``, and
    ``output`` set (the explicit one, else the last step's image output).
    """
    plan = as_plan(plan)
    if not plan.steps:
        raise PlanError(["the plan has no steps; an edit needs at least one tool step"])
    if len(plan.steps) > max_steps:
        raise PlanError([f"the plan has {len(plan.steps)} steps; at most {max_steps} are allowed: split the edit "
                         f"into several turns or drop steps that are not needed"])
    return _Checker(plan, agent_tools(tools), references, session).run()
