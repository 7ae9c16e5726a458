"""The offline rules planner: the common instruction forms, planned with no model and no API key.

``offline_rules`` reads the instruction into intents (one per clause); this module turns each
intent into catalogued tool steps, each clause working on the previous clause's image:

* remove X            -> segment_by_text(X) -> remove_object
* replace X with Y    -> segment_by_text(X) -> [write_prompts] -> inpaint(prompt=Y)
* recolor X to C      -> segment_by_text(X) -> recolor(color=C)
* write "T" at the top-> place_region(top) -> draw_text(text=T);  on X: ground(X) -> draw_text
* change the sign to say "T" -> ground(text on the sign / the old text) -> replace_text(text=T)
* draw boxes around X -> ground(X) -> render_boxes
* add Y on X          -> insert_object
* try this shirt on   -> try_on(garment=reference)
* use the reference for X -> segment_by_text(X) -> reference_inpaint(reference)
* make X look Y       -> segment_by_text(X) -> write_prompts(the clause) -> inpaint(its prompts)

Arguments are found in the catalogue by role (a "query", a "prompt", a connection of a kind), never
assumed, and every plan is validated against the catalogue before it is returned. A form whose
tool is not installed is declined with the tool's name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ...catalogue.spec import Arg, Tool
from ..plan import MAX_STEPS, SESSION_PREFIX, Plan, PlanError, Step, agent_tools, validate
from .base import ImageInfo, Planner, PlannerDeclined
from .offline_rules import Grammar, Intent

log = logging.getLogger(__name__)

# Literal roles -> the argument names that play them, in order of preference.
ROLES = {
    "query": ("query", "text_query", "phrase", "prompt"),
    "prompt": ("prompt", "positive_prompt", "positive", "target_prompt", "description"),
    "negative_prompt": ("negative_prompt", "negative"),
    "subject": ("subject", "subject_token", "object", "object_name"),
    "instruction": ("instruction", "edit_instruction"),
    "color": ("color", "colour"),
    "text": ("text",),
    "position": ("position", "where", "region"),
    "cloth_type": ("cloth_type", "garment_type", "clothing_type", "category"),
}
_MAIN_IMAGE_NAMES = ("image", "person", "person_image", "source", "source_image", "target_image")
_REFERENCE_NAMES = ("reference", "reference_image", "garment", "garment_image", "cloth", "cloth_image", "ip_image")

PURPOSES = {
    "remove_object": "removing objects", "inpaint": "replacing objects", "recolor": "recolouring",
    "draw_text": "writing text", "replace_text": "replacing text", "place_region": "writing text at a named place", "ground": "finding objects",
    "render_boxes": "drawing boxes", "insert_object": "inserting objects", "try_on": "trying on garments",
    "reference_inpaint": "editing with a reference image", "segment_by_text": "finding what to edit",
    "write_prompts": "a free-form edit (a model writes the inpainting prompt)",
}


@dataclass(frozen=True)
class Link:
    """A literal role fed from a step output instead (write_prompts' positive -> inpaint's prompt)."""

    ref: str


class _Builder:
    """Appends steps, finding each tool's arguments by role; ``image`` is the image edited so far.
    ``history`` is session memory: targets written ``session:<region>`` use the region's stored mask."""

    def __init__(self, tools: Mapping[str, Tool], references: int, history: Mapping[str, Any] | None = None):
        self.tools, self.references = tools, references
        self.steps: list[Step] = []
        self.image = "image"
        history = history or {}
        self.regions = {r["name"]: r for r in history.get("regions", [])}
        self.session_references = [r["name"] for r in history.get("references", [])]  # newest first

    def need(self, name: str) -> Tool:
        tool = self.tools.get(name)
        if tool is None:
            purpose = PURPOSES.get(name, "this edit")
            raise PlannerDeclined(f"{purpose} needs the {name} tool, which is not installed in this version")
        return tool

    def add(self, name: str, values: Mapping[str, Any] = (), links: Mapping[str, str] = (),
            required: Iterable[str] = ()) -> str:
        """Adds a step of tool ``name``; ``values`` by role, ``links`` by kind ("image", "reference",
        "mask", "boxes"); a role in ``required`` that the tool lacks declines the plan."""
        tool = self.need(name)
        step_id = f"s{len(self.steps) + 1}"
        args, inputs = {}, _link_args(tool, dict(links))
        required = set(required)
        for role, value in dict(values).items():
            arg = _role_arg(tool, role)
            if arg is None:
                if role in required:
                    raise PlannerDeclined(f"the installed {name} tool has no argument for the {role} "
                                          f"(looked for: {', '.join(ROLES[role])})")
                continue
            if isinstance(value, Link):
                inputs[arg.name] = value.ref
                continue
            if arg.kind == "choice":
                value = _choice(arg, value)
                if value is None:
                    if role in required:
                        raise PlannerDeclined(f"the installed {name} tool does not offer {values[role]!r} for "
                                              f"{arg.name}; it offers: {', '.join(arg.choices)}")
                    continue
            args[arg.name] = value
        self.steps.append(Step(step_id, tool.name, args, inputs))
        return step_id

    def mask_of(self, target: str) -> str:
        """Segments ``target`` in the current image; returns the mask reference (a remembered region's
        own mask when ``target`` is one)."""
        if target.startswith(SESSION_PREFIX):
            return target
        self.need("segment_by_text")
        step = self.add("segment_by_text", {"query": target}, {"image": self.image}, required=["query"])
        return f"{step}.{_output(self.tools['segment_by_text'], 'mask')}"

    def boxes_of(self, target: str) -> str:
        """Finds ``target`` in the current image; returns the boxes reference (a remembered region's box)."""
        if target.startswith(SESSION_PREFIX):
            region = self.regions[target[len(SESSION_PREFIX):]]
            if not region.get("boxes"):
                raise PlannerDeclined(f"the remembered {region['label']!r} has no box to write in or draw")
            return SESSION_PREFIX + region["boxes"]
        self.need("ground")
        finder = self.add("ground", {"query": target}, {"image": self.image}, required=["query"])
        return f"{finder}.{_output(self.tools['ground'], 'boxes')}"

    def words(self, target: str) -> str:
        """What a target is called in a prompt ("glass" for ``session:glass``)."""
        if target.startswith(SESSION_PREFIX):
            return self.regions[target[len(SESSION_PREFIX):]]["label"]
        return target

    def edited(self, step_id: str) -> None:
        """The step's image becomes the image the next clause edits."""
        step = next(s for s in self.steps if s.id == step_id)
        self.image = f"{step_id}.{_output(self.tools[step.tool], 'image')}"

    def reference(self, number: int, purpose: str) -> str:
        if self.references < 1 and self.session_references:
            return SESSION_PREFIX + self.session_references[0]  # "the same shirt": the last one given
        if self.references < 1:
            raise PlannerDeclined(f"{purpose} needs a reference image; attach one with the instruction")
        if number > self.references:
            raise PlannerDeclined(f"the instruction uses reference image {number}, but only {self.references} "
                                  f"reference image(s) came with it")
        return "reference" if number == 1 else f"reference_{number}"


def _role_arg(tool: Tool, role: str) -> Arg | None:
    args = {a.name: a for a in tool.args if a.agent and not a.is_link}
    return next((args[n] for n in ROLES[role] if n in args), None)


def _choice(arg: Arg, value: str) -> str | None:
    if callable(arg.choices):  # computed at run time: never called by the agent; the node checks it
        return value
    squash = lambda s: "".join(ch for ch in s.lower() if ch.isalnum())  # noqa: E731
    return next((c for c in arg.choices if squash(c) == squash(value)), None)


def _link_args(tool: Tool, links: dict[str, str]) -> dict[str, str]:
    """Connects ``links`` (by kind; "reference" is an image) to the tool's link arguments; a required
    connection left over declines the plan."""
    free = [a for a in tool.args if a.agent and a.is_link]
    inputs: dict[str, str] = {}

    def take(kind: str, ref: str, preferred: tuple[str, ...], last: bool = False):
        candidates = [a for a in free if a.kind == kind and a.name not in inputs]
        pick = next((a for a in candidates if a.name in preferred), None)
        if pick is None and candidates:
            pick = candidates[-1] if last else candidates[0]
        if pick is not None:
            inputs[pick.name] = ref

    if "reference" in links:
        take("image", links.pop("reference"), _REFERENCE_NAMES, last=True)
    if "image" in links:
        take("image", links.pop("image"), _MAIN_IMAGE_NAMES)
    for kind, ref in links.items():
        take(kind, ref, (kind,))
    missing = [a.name for a in free if not a.optional and a.name not in inputs]
    if missing:
        raise PlannerDeclined(f"the installed {tool.name} tool needs {', '.join(missing)}, which the offline "
                              f"planner cannot provide")
    return inputs


def _output(tool: Tool, kind: str) -> str:
    for out in tool.outputs:
        if out.kind == kind:
            return out.name
    raise PlannerDeclined(f"the installed {tool.name} tool gives no {kind}")


def _without_article(phrase: str) -> str:
    words = phrase.split(" ", 1)
    return words[1] if len(words) == 2 and words[0].lower() in ("a", "an", "the", "some") else phrase


class OfflinePlanner(Planner):
    """Plans the common instruction forms (``offline_rules.FORMS``) with rules, against ``tools``
    (the whole catalogue when None). ``prompt_writer`` adds a ``write_prompts`` step before each
    inpaint, when the tool is installed, so a model writes the prompts from the image."""

    name = "offline"

    def __init__(self, tools: Iterable[Tool] | None = None, *, prompt_writer: bool = False):
        self.catalogue = agent_tools(tools)
        self.tools = {t.name: t for t in self.catalogue}
        self.prompt_writer = prompt_writer

    def plan(self, instruction: str, image_info: ImageInfo | None = None, references: int = 0,
             history: Mapping[str, Any] | None = None) -> Plan:
        """The rules read only the words (``image_info`` is not used). With ``history`` (session
        memory, ``agent/session/memory.py``), "it", "the same one" and the names of remembered regions
        use the regions' stored masks and boxes (``session:<region>``), and a garment or reference
        given in an earlier turn is used again when none comes with this one."""
        if not isinstance(instruction, str):
            raise PlannerDeclined("the instruction must be text")
        recall = None
        if history:
            from ..session.memory import recall as memory_recall

            recall = memory_recall(history)
        intents = Grammar(references, recall).parse(instruction)
        build = _Builder(self.tools, references, history)
        for intent in intents:
            getattr(self, f"_{intent.form}")(build, intent)
        notes = "offline rules: " + "; then ".join(f"{i.form} ({i.clause})" for i in intents)
        if len(build.steps) > MAX_STEPS:
            raise PlannerDeclined(f"this instruction needs {len(build.steps)} steps; a plan may have at most "
                                  f"{MAX_STEPS}: split it into several turns")
        try:
            return validate(Plan(build.steps, instruction, notes), self.catalogue, references=references,
                            session=history.get("artifacts", {}) if history else None)
        except PlanError as exc:
            log.warning("offline plan for %r failed validation: %s", instruction, exc)
            raise PlannerDeclined("the installed tools do not fit the offline planner's plan: "
                                  + " ".join(exc.problems)) from None

    # --- one method per form -------------------------------------------------------------------
    def _remove(self, build: _Builder, intent: Intent) -> None:
        build.need("remove_object")
        mask = build.mask_of(intent.target)
        build.edited(build.add("remove_object", {}, {"image": build.image, "mask": mask}))

    def _replace(self, build: _Builder, intent: Intent) -> None:
        build.need("inpaint")
        if self.prompt_writer and "write_prompts" in self.tools:
            return self._edit(build, intent)
        mask = build.mask_of(intent.target)
        values = {"prompt": intent.value, "negative_prompt": build.words(intent.target)}
        build.edited(build.add("inpaint", values, {"image": build.image, "mask": mask}, required=["prompt"]))

    def _edit(self, build: _Builder, intent: Intent) -> None:
        """A model writes the prompts from the image, the region and the clause; inpaint paints them."""
        build.need("inpaint")
        writer_tool = build.need("write_prompts")
        texts = [o.name for o in writer_tool.outputs if o.kind == "string"]
        named = [n for n in ("positive", "negative") if n in texts]
        texts = named if len(named) == 2 else texts  # by name where it has them, else in order
        if len(texts) < 2:
            raise PlannerDeclined("the installed write_prompts tool gives no positive and negative prompt")
        mask = build.mask_of(intent.target)
        writer = build.add("write_prompts", {"instruction": intent.clause}, {"image": build.image, "mask": mask},
                           required=["instruction"])
        values = {"prompt": Link(f"{writer}.{texts[0]}"), "negative_prompt": Link(f"{writer}.{texts[1]}")}
        build.edited(build.add("inpaint", values, {"image": build.image, "mask": mask}, required=["prompt"]))

    def _recolor(self, build: _Builder, intent: Intent) -> None:
        build.need("recolor")
        mask = build.mask_of(intent.target)
        build.edited(build.add("recolor", {"color": intent.value}, {"image": build.image, "mask": mask},
                               required=["color"]))

    def _write(self, build: _Builder, intent: Intent) -> None:
        build.need("draw_text")
        if intent.target:
            boxes = build.boxes_of(intent.target)
        else:
            build.need("place_region")
            region = build.add("place_region", {"position": intent.position}, {"image": build.image},
                               required=["position"])
            boxes = f"{region}.{_output(self.tools['place_region'], 'boxes')}"
        values = {"text": intent.value}
        if intent.color:
            values["color"] = intent.color
        build.edited(build.add("draw_text", values, {"image": build.image, "boxes": boxes}, required=["text"]))

    def _replace_text(self, build: _Builder, intent: Intent) -> None:
        build.need("replace_text")
        boxes = build.boxes_of(intent.target)
        build.edited(build.add("replace_text", {"text": intent.value}, {"image": build.image, "boxes": boxes},
                               required=["text"]))

    def _highlight(self, build: _Builder, intent: Intent) -> None:
        build.need("render_boxes")
        boxes = build.boxes_of(intent.target)
        build.edited(build.add("render_boxes", {}, {"image": build.image, "boxes": boxes}))

    def _insert(self, build: _Builder, intent: Intent) -> None:
        tool = build.need("insert_object")
        prompt = intent.prompt or intent.value
        links = {"image": build.image}
        if any(a.kind == "mask" and a.agent and not a.optional for a in tool.args):
            if not intent.target:
                raise PlannerDeclined(f"say where to add {intent.value}, e.g. 'add {intent.value} on the table'")
            links["mask"] = build.mask_of(intent.target)
        values = {"prompt": prompt, "subject": _without_article(intent.value)}
        build.edited(build.add("insert_object", values, links, required=["prompt"]))

    def _try_on(self, build: _Builder, intent: Intent) -> None:
        tool = build.need("try_on")
        garment = build.reference(intent.reference, "trying on a garment (its picture)")
        links = {"image": build.image, "reference": garment}
        if any(a.kind == "mask" and a.agent and not a.optional for a in tool.args):
            links["mask"] = build.mask_of({"upper": "upper-body clothes", "lower": "trousers or skirt"}.get(
                intent.value, "clothes"))
        build.edited(build.add("try_on", {"cloth_type": intent.value}, links))

    def _reference(self, build: _Builder, intent: Intent) -> None:
        build.need("reference_inpaint")
        reference = build.reference(intent.reference, "editing with a reference")
        mask = build.mask_of(intent.target)
        build.edited(build.add("reference_inpaint", {}, {"image": build.image, "mask": mask, "reference": reference}))
