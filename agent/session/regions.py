"""Naming what a turn found and what it did to it, from its plan alone (no model).

A step that makes a mask from a phrase (``segment_by_text`` with ``query`` "the cup", or
``segment`` fed by a ``ground`` step) makes a *region*. The image steps that use the mask say what
became of it: inpainting "a glass" there makes the region "glass" (it was "cup"), removing makes it
"removed", recolouring keeps its name and records the colour. Masks that come from session memory
(``session:glass``) are edits of an earlier turn's region: the summary records them so memory can
tell that "the glass" is now red, on this branch only.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from ..plan import SESSION_PREFIX

EFFECTS = {"remove_object": "removed", "remove": "removed", "object_removal": "removed",
           "inpaint": "replaced", "insert_object": "replaced", "reference_inpaint": "replaced", "try_on": "replaced",
           "recolor": "recolored", "draw_text": "text"}
_QUERY_ARGS = ("query", "text_query", "phrase")
_CONTENT_ARGS = ("subject", "prompt", "positive_prompt", "description")
_ARTICLES = r"(?:the|a|an|some|one|this|that|these|those|my|its|same|all(?:\s+of)?(?:\s+the)?)"
_CUT = re.compile(r"[,;:(]|\s(?:with|on|in|at|near|by|under|over|above|below|behind|beside|next to|holding|"
                  r"wearing|from|of the|against)\s", re.IGNORECASE)
MAX_NAME_WORDS = 3


def words_of(text: str) -> list[str]:
    """'A clear drinking glass, photorealistic' -> ['clear', 'drinking', 'glass']: the head phrase,
    no articles, at most the last three words (the noun comes last in English)."""
    text = _CUT.split(f" {text} ", maxsplit=1)[0]
    words = re.findall(r"[a-z0-9]+", text.lower())
    while words and re.fullmatch(_ARTICLES, words[0]):
        words = words[1:]
    return words[-MAX_NAME_WORDS:]


def slug(words: Iterable[str]) -> str:
    name = "_".join(words)[:48].strip("_")
    return name or "region"


def query_of(step: Mapping, by_id: Mapping[str, Mapping]) -> str:
    """The phrase a mask or box step looked for: its own query, or that of the step that fed it boxes."""
    args = step.get("args") or {}
    for name in _QUERY_ARGS:
        if isinstance(args.get(name), str) and args[name].strip():
            return args[name].strip()
    for ref in (step.get("inputs") or {}).values():  # boxes or points found by another step (ground)
        step_id, _, output = str(ref).partition(".")
        source = by_id.get(step_id) if ("box" in output or "point" in output) else None
        if source is not None and source is not step:
            found = query_of(source, by_id)
            if found:
                return found
    return ""


def _is_mask_ref(name: str, ref: str) -> bool:
    if ref.startswith(SESSION_PREFIX):
        return "mask" in name
    return "." in ref and "mask" in ref.split(".", 1)[1]


def _origin(ref: str, by_id: Mapping[str, Mapping], exposed: Mapping[str, int]) -> dict:
    """Where a mask reference comes from: a step of this turn (through mask-refining steps) or a
    session artifact."""
    seen = set()
    while not ref.startswith(SESSION_PREFIX):
        step_id = ref.split(".", 1)[0]
        step = by_id.get(step_id)
        if step is None or step_id in seen:
            return {"step": step_id}
        seen.add(step_id)
        masks = [r for n, r in (step.get("inputs") or {}).items() if _is_mask_ref(n, str(r))]
        refines = "refine" in str(step.get("tool", "")) or "grow" in str(step.get("tool", ""))
        if not (refines and len(masks) == 1):
            return {"step": step_id}
        ref = str(masks[0])
    name = ref[len(SESSION_PREFIX):]
    return {"artifact": exposed[name]} if name in exposed else {"name": name}


def _content(step: Mapping, query: str, intents) -> str:
    args = step.get("args") or {}
    for name in _CONTENT_ARGS:
        if isinstance(args.get(name), str) and args[name].strip():
            return " ".join(words_of(args[name]))
    target = " ".join(words_of(query))
    for intent in intents:  # the prompt came from another step (a prompt writer): the user's words then
        if intent.form in ("replace", "insert", "edit") and " ".join(words_of(intent.target)) == target:
            return " ".join(words_of(intent.value))
    return ""


def _intents(instruction: str):
    if not instruction:
        return []
    from ..planners.base import PlannerDeclined
    from ..planners.offline_rules import Grammar

    try:
        return Grammar(0).parse(instruction)
    except PlannerDeclined:
        return []


def summarize(steps: list[Mapping], exposed: Mapping[str, int], instruction: str = "") -> dict:
    """What a plan did: its tools, and for each image step that used a mask, the effect on the mask's
    origin (``{"step": "s1"}`` or ``{"artifact": 12}``) with its value (new content, colour, text)."""
    by_id = {str(s.get("id")): s for s in steps}
    intents = None
    edits = []
    for step in steps:
        effect = EFFECTS.get(str(step.get("tool", "")), "edited")
        for name, ref in (step.get("inputs") or {}).items():
            ref = str(ref)
            if not _is_mask_ref(name, ref):
                continue
            origin = _origin(ref, by_id, exposed)
            query = query_of(by_id[origin["step"]], by_id) if "step" in origin and origin["step"] in by_id else ""
            args = step.get("args") or {}
            value = ""
            if effect == "replaced":
                intents = _intents(instruction) if intents is None else intents
                value = _content(step, query, intents)
            elif effect == "recolored":
                value = str(args.get("color", ""))
            elif effect == "text":
                value = str(args.get("text", ""))
            if effect == "replaced" and not value:
                effect = "edited"
            edits.append({"step": str(step.get("id")), "tool": str(step.get("tool")), "effect": effect,
                          "value": value, "source": origin})
    return {"tools": [str(s.get("tool")) for s in steps], "edits": edits}


def name_regions(steps: list[Mapping], mask_steps: Iterable[str], summary: Mapping,
                 taken: Iterable[str] = ()) -> dict[str, dict]:
    """A region for each step of ``mask_steps`` that looked for a phrase: its name (unique in the
    turn, not in ``taken``), label, the query, and what became of it (state, value, former names)."""
    by_id = {str(s.get("id")): s for s in steps}
    used = set(taken)
    regions = {}
    for step_id in mask_steps:
        step = by_id.get(step_id)
        query = query_of(step, by_id) if step is not None else ""
        if not query:
            continue
        found = words_of(query)
        words, state, value, was = found, "found", "", []
        for edit in summary.get("edits", []):
            if edit["source"] != {"step": step_id}:
                continue
            state, value = edit["effect"], edit["value"]
            if state == "replaced" and value:
                was = [slug(words)] + was
                words = value.split()
        name, n = slug(words), 2
        while name in used:
            name, n = f"{slug(words)}_{n}", n + 1
        used.add(name)
        regions[step_id] = {"name": name, "label": " ".join(words) or query, "query": query, "state": state,
                            "value": value, "was": was, "found_as": " ".join(found)}
    return regions
