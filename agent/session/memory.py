"""Session memory for the planner, and the routing step that decides which checkpoint a turn edits.

The seed kept three turns, renumbered them, and asked an LLM to guess which earlier image a new
instruction meant. Here the words decide whenever they can:

* ``route`` reads navigation from the instruction ("undo", "undo the last two", "redo", "go back to
  turn 3", "go back to the original", "go back to before the glass", "from the original, ...") and
  answers with the checkpoint to edit (or to move to, when the text only navigates) and what is
  left to plan. With no navigation words the turn edits the current checkpoint.
* ``build_history`` is the compact memory of that checkpoint's branch, as a plain dict for
  ``Planner.plan(history=...)``: the earlier instructions, the named regions with boxes (and what
  became of them: "glass", was "cup", now red), references, which region "it" means, and the
  ``artifacts`` (name -> kind) that ``validate(session=...)`` allows as ``session:<name>``.
* ``resolve_region`` answers "it", "the same one", "the glass" with a region name, or None when the
  phrase names nothing remembered (the planner then finds it in the image as usual).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import navigation
from .errors import TurnNotFound
from .regions import slug, words_of
from .state import Checkpoint, SessionState

PRONOUNS = {"it", "them", "they", "him", "her", "that", "this", "one", "thing", "same", "same one", "same thing",
            "object", "that one", "this one"}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "once": 1, "two": 2, "twice": 2, "three": 3, "thrice": 3, "four": 4, "five": 5,
            "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "first": 1, "second": 2, "third": 3,
            "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10}
_NUM = r"(?:\d{1,4}|" + "|".join(_NUMBERS) + r")"
_LEAD = r"^(?:(?:please|ok(?:ay)?|now|and|then|so|just|can you|could you|would you|let'?s)[\s,]+)*"
_GO = r"(?:go(?:ing)?\s+back\s+to|back\s+to|return\s+to|revert\s+to|restore|reset\s+to|roll\s*back\s+to|jump\s+to|" \
      r"switch\s+to|use|take|start\s+(?:again\s+)?from|continue\s+from|from|on|in|with)"
_UNITS = r"(?:edits?|changes?|steps?|turns?|ones?|actions?|things?)"
_TAIL = r"(?P<rest>(?:\s*(?:,|;|\.|!|:|\band\b|\bthen\b)\s*)+.*|)$"
_FORMS = (
    ("undo", rf"(?:undo|revert|reverse|take\s+back|go\s+back)(?:\s+(?:that|this|it|(?:the|my)\s+last(?:\s+{_UNITS})?|"
             rf"(?:the|my)\s+(?:last|previous)\s+(?P<n1>{_NUM})(?:\s+{_UNITS})?|(?P<n2>{_NUM})\s+(?:times|{_UNITS})|"
             rf"(?P<n3>once|twice|thrice)|(?:one\s+)?step))?"),
    ("redo", rf"redo(?:\s+(?:that|it|the\s+last(?:\s+{_UNITS})?|(?P<n2>{_NUM})\s+(?:times|{_UNITS})|"
             rf"(?P<n3>once|twice|thrice)))?"),
    ("original", rf"(?:start\s+over|start\s+again|reset|{_GO}\s+(?:the\s+)?(?:very\s+)?(?:original|first|initial|"
                 rf"starting|unedited)(?:\s+(?:image|photo|picture|version|one|state))?)"),
    ("turn", rf"{_GO}\s+(?:the\s+)?(?:(?:image|result|version|state|output)\s+(?:of|from|after)\s+)?"
             rf"(?:(?:turn|edit|version)\s+(?P<t1>{_NUM})(?:\s*,?\s*step\s+(?P<s1>[A-Za-z0-9_]+))?|"
             rf"step\s+(?P<s2>[A-Za-z0-9_]+)\s+of\s+turn\s+(?P<t2>{_NUM})|(?P<t3>{_NUM})(?:st|nd|rd|th)?\s+"
             rf"(?:turn|edit|result|version))(?:'s\s+(?:image|result|version))?"),
    ("before", rf"{_GO}\s+(?:the\s+(?:image|version|state)\s+|how\s+it\s+was\s+|what\s+it\s+was\s+)?before\s+"),
)


_NOT_NAMES = {"i", "you", "we", "it", "the", "a", "an", "my", "this", "that", "to", "of", "on", "in", "with", "was",
              "were", "is", "made", "make", "added", "add", "did", "do", "removed", "remove", "changed", "change",
              "replaced", "replace", "turned", "turn", "put", "wrote", "write", "edit", "edited", "into", "by"}


@dataclass(frozen=True)
class Navigation:
    kind: str                  # undo | redo | original | turn | before
    count: int = 1
    turn: int | None = None
    step: str | None = None
    phrase: str = ""           # for "before X"
    rest: str = ""             # the edit that follows ("and remove the spoon")


@dataclass(frozen=True)
class Exposed:
    """What ``session:<name>`` binds to: an artifact, as an image, a mask or boxes."""

    artifact: int
    kind: str


@dataclass(frozen=True)
class Route:
    action: str                # "edit", or (the text only navigates) "undo" | "redo" | "rollback"
    instruction: str           # what is left for the planner ("" when the text only navigates)
    base: Checkpoint           # the checkpoint the turn edits / the head moves to
    reason: str
    history: dict              # for Planner.plan(history=...)
    bindings: dict = field(default_factory=dict)  # name -> Exposed
    version: int = 0           # the session version this route was computed on

    @property
    def kinds(self) -> dict:
        """For ``validate(plan, session=route.kinds)``."""
        return {name: e.kind for name, e in self.bindings.items()}

    @property
    def exposed(self) -> dict:
        """For ``SessionStore.start_turn(exposed=...)``."""
        return {name: e.artifact for name, e in self.bindings.items()}


def _number(word: str | None, default: int = 1) -> int:
    if not word:
        return default
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


def parse_navigation(instruction: str) -> Navigation | None:
    """The navigation at the start of an instruction and the edit left after it, or None."""
    text = re.sub(r"\s+", " ", str(instruction)).strip()
    lead = re.match(_LEAD, text, re.IGNORECASE)
    body = text[lead.end():] if lead else text
    for kind, pattern in _FORMS:
        # "before X" takes the rest of the sentence: X may hold "and" ("before the salt and pepper").
        tail = r"(?P<x>.+)$" if kind == "before" else _TAIL
        m = re.match(rf"(?:{pattern}){tail}", body, re.IGNORECASE)
        if m is None:
            continue
        groups = {k: v for k, v in m.groupdict().items() if v}
        rest = re.sub(r"^[\s,;.!:]*(?:(?:and|then)\b[\s,]*)*", "", groups.get("rest", "")).strip()
        if kind == "before":
            phrase = groups["x"].strip(" .,!")
            turn = re.fullmatch(rf"(?:turn|edit)\s+({_NUM})", phrase, re.IGNORECASE)
            if turn:
                return Navigation("before", turn=_number(turn.group(1)), phrase=phrase)
            return Navigation("before", phrase=phrase)
        if kind in ("undo", "redo"):
            count = _number(groups.get("n1") or groups.get("n2") or groups.get("n3"))
            return Navigation(kind, count=count, rest=rest)
        if kind == "original":
            return Navigation("original", turn=0, rest=rest)
        turn = _number(groups.get("t1") or groups.get("t2") or groups.get("t3"))
        return Navigation("turn", turn=turn, step=groups.get("s1") or groups.get("s2"), rest=rest)
    return None


def _before_target(state: SessionState, nav: Navigation) -> int:
    if nav.turn is not None:
        if nav.turn == 0 or nav.turn not in state.turns:
            raise TurnNotFound(f"there is no turn {nav.turn} to go back before (the session has turns "
                               f"1 to {max(state.turns)})")
        return state.turns[nav.turn].base
    wanted = set(re.findall(r"[a-z0-9]+", nav.phrase.lower())) - _NOT_NAMES
    order = [t for t, _ in state.lineage(state.info.head)] + sorted(state.turns.values(), key=lambda t: -t.number)
    for turn in order:
        if turn.number == 0:
            continue
        said = set(re.findall(r"[a-z0-9]+", turn.instruction.lower()))
        named = {w for a in state.turn_artifacts(turn.number) if a.name
                 for w in (a.label or "").split() + [x for was in a.meta.get("was", []) for x in was.split("_")]}
        if wanted and (wanted <= said or wanted <= named):
            return turn.base
    raise TurnNotFound(f"no turn of this session mentions {nav.phrase!r}; say 'go back to turn N' "
                       f"(turns 1 to {max(state.turns)})")


def _target(state: SessionState, nav: Navigation) -> int:
    if nav.kind == "undo":
        return navigation.undo_target(state, nav.count)
    if nav.kind == "redo":
        return navigation.redo_target(state, nav.count)
    if nav.kind == "before":
        return _before_target(state, nav)
    return navigation.turn_target(state, nav.turn, nav.step)


def route(state: SessionState, instruction: str) -> Route:
    """Which checkpoint this instruction edits (or moves to), the edit left to plan, and the memory."""
    nav = parse_navigation(instruction)
    if nav is None:
        base = state.info.head
        reason = f"no navigation words: edits the current checkpoint ({state.checkpoint(base).label})"
        rest, action = str(instruction).strip(), "edit"
    else:
        base = _target(state, nav)
        action = {"undo": "undo", "redo": "redo"}.get(nav.kind, "rollback")
        reason = f"{nav.kind}" + (f" x{nav.count}" if nav.count > 1 else "") + f": {state.checkpoint(base).label}"
        rest = nav.rest
        if rest:
            action, reason = "edit", f"{reason}, then edit it (a new branch when it is not the newest)"
    history, bindings = build_history(state, base)
    return Route(action, rest, state.checkpoint(base), reason, history, bindings, state.info.version)


def route_turn(store, session_id: str, instruction: str) -> Route:
    return route(store.state(session_id), instruction)


# --- the compact history --------------------------------------------------------------------------
def _regions(state: SessionState, checkpoint: int):
    """The regions of the checkpoint's branch as they are now, oldest first, and the one that "it"
    means: the region made or edited last that still exists (a removed one is not "it")."""
    art = state.artifacts[checkpoint]
    found: dict[int, dict] = {}
    touched: list[int] = []
    for turn, stop in reversed(state.lineage(checkpoint)):
        positions = {s.step: s.position for s in turn.steps}
        limit = positions.get(stop, len(positions)) if stop else len(positions)
        for a in state.turn_artifacts(turn.number):
            if a.kind == "mask" and a.name and positions.get(a.step, 0) <= limit \
                    and (a.width, a.height) == (art.width, art.height) and not a.pruned:
                meta = a.meta
                found[a.id] = {"label": a.label or a.name, "box": [round(v) for v in a.box] if a.box else None,
                               "turn": turn.number, "step": a.step, "state": meta.get("state", "found"),
                               "value": meta.get("value", ""), "was": list(meta.get("was", [])),
                               "found_as": meta.get("found_as", ""), "artifact": a.id}
                touched.append(a.id)
        for edit in turn.summary.get("edits", []):
            if stop and positions.get(edit["step"], 0) > limit:
                continue
            region = found.get(edit["source"].get("artifact"))
            if region is None:
                continue
            if edit["effect"] == "replaced" and edit["value"]:
                region["was"].insert(0, slug(region["label"].split()))
                region["label"] = edit["value"]
            region["state"], region["value"] = edit["effect"], edit["value"]
            region["turn_touched"] = turn.number
            touched.append(region["artifact"])
    last = next((a for a in reversed(touched) if found[a]["state"] != "removed"), None)
    return list(found.values()), last


def build_history(state: SessionState, checkpoint: int, *, max_turns: int = 8):
    """The memory of ``checkpoint``'s branch: (history dict for the planner, name -> ``Exposed``)."""
    art = state.artifacts[checkpoint]
    lineage = state.lineage(checkpoint)
    bindings: dict[str, Exposed] = {}
    regions, last = _regions(state, checkpoint)
    entries = []
    for region in sorted(regions, key=lambda r: (r.get("turn_touched", r["turn"]), r["turn"]), reverse=True):
        name = slug(region["label"].split())
        if name in bindings or f"{name}_box" in bindings:
            name = f"{name}_t{region['turn']}"
        while name in bindings:
            name += "_"
        bindings[name] = Exposed(region["artifact"], "mask")
        entry = {"name": name, **region}
        if region["box"]:
            bindings[f"{name}_box"] = Exposed(region["artifact"], "boxes")
            entry["boxes"] = f"{name}_box"
        entries.append(entry)
    last_name = next((e["name"] for e in entries if e["artifact"] == last), None)
    references = []
    for turn, _ in lineage:
        for a in state.turn_artifacts(turn.number):
            if a.kind == "reference" and not a.pruned and a.name not in bindings:
                bindings[a.name] = Exposed(a.id, "image")
                references.append({"name": a.name, "turn": turn.number, "label": a.label})
    if lineage and lineage[-1][0].number == 0:
        bindings["original"] = Exposed(state.original(), "image")
    on_branch = {t.number for t, _ in lineage}
    turns = [{"turn": t.number, "instruction": t.instruction, "tools": t.summary.get("tools", []),
              "regions": sorted(t.summary.get("regions", {}).values()),
              "edited": state.checkpoint(t.base).label if t.base in state.artifacts else None,
              **({"stopped_at_step": stop} if stop else {})}
             for t, stop in lineage if t.number > 0]
    history = {
        "session": state.info.id, "version": state.info.version,
        "checkpoint": {"artifact": checkpoint, "turn": art.turn, "step": state.checkpoint(checkpoint).step,
                       "label": state.checkpoint(checkpoint).label, "width": art.width, "height": art.height},
        "turns": turns[:max_turns], "omitted_turns": max(0, len(turns) - max_turns),
        "other_branches_turns": len([n for n in state.turns if n not in on_branch and n > 0]),
        "regions": entries, "last_region": last_name, "references": references,
        "artifacts": {name: e.kind for name, e in bindings.items()},
    }
    return history, bindings


def resolve_region(history, phrase: str) -> str | None:
    """The region a phrase means ("it", "the same one", "the glass", "the red glass"), or None."""
    if not history:
        return None
    text = re.sub(r"\s+", " ", str(phrase).lower()).strip(" .,!?")
    words = words_of(text)
    live = [r for r in history.get("regions", []) if r["state"] != "removed"]
    if not words or " ".join(words) in PRONOUNS or text in PRONOUNS:
        return history.get("last_region")
    joined = " ".join(words)
    for region in live:  # newest first
        colour = [region["value"]] if region["state"] == "recolored" and region["value"] else []
        if joined in (region["label"], " ".join(colour + region["label"].split())) or slug(words) == region["name"]:
            return region["name"]
    for region in live:
        if words[-1] == region["label"].split()[-1] and set(words[:-1]) <= set(region["label"].split()) | {
                region["value"]}:
            return region["name"]
    return None


def recall(history):
    """For a rules planner: phrase -> ``"session:<region>"`` or None."""
    if not history or not history.get("regions"):
        return None

    def find(phrase: str):
        name = resolve_region(history, phrase)
        return f"session:{name}" if name else None

    return find


def history_text(history) -> str:
    """The memory as a few lines for an LLM planner's prompt."""
    if not history:
        return ""
    lines = [f"Session memory. This edit starts from {history['checkpoint']['label']}."]
    for t in reversed(history["turns"]):
        made = f" -> regions {', '.join(t['regions'])}" if t["regions"] else ""
        lines.append(f"- turn {t['turn']}: {t['instruction']!r} ({', '.join(t['tools'])}){made}")
    if history["omitted_turns"]:
        lines.append(f"- ({history['omitted_turns']} earlier turns not shown)")
    for r in history["regions"]:
        box = "x={}, y={}, w={}, h={}".format(*r["box"]) if r["box"] else "no box"
        note = f"; was {', '.join(r['was'])}" if r["was"] else ""
        state = f"; {r['state']} {r['value']}".rstrip() if r["state"] != "found" else ""
        lines.append(f"- region {r['label']!r}: mask \"session:{r['name']}\"" +
                     (f", boxes \"session:{r['boxes']}\"" if r.get("boxes") else "") + f" ({box}; turn {r['turn']}"
                     f"{note}{state})")
    if history.get("last_region"):
        lines.append(f"- 'it' / 'the same one' most likely means region {history['last_region']!r}")
    for ref in history["references"]:
        lines.append(f"- earlier reference image: \"session:{ref['name']}\" (turn {ref['turn']})")
    return "\n".join(lines)

