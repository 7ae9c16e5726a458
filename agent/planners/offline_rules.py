"""The offline planner's grammar: an instruction -> a list of edit intents, one per clause.

Pure text work, no catalogue: ``offline.py`` turns the intents into tool steps. Matching is
case-insensitive and tolerant of articles, politeness and punctuation; quoted text ("SALE") is cut
out first and kept verbatim, so it is never read as an instruction (nor split at its commas).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .base import PlannerDeclined

MAX_INSTRUCTION_CHARS = 2000  # far above any real instruction; keeps the patterns' matching time small

FORMS = (
    "remove X (erase / delete / get rid of X)",
    "replace X with Y (swap X for Y, change / turn X into Y)",
    "add Y to / on / near X (put / place / insert Y ...)",
    "recolor X to C (make X C, paint X C, change the colour of X to C)",
    "write \"T\" at the top / bottom / left / ... or on X",
    "change the sign to say \"T\" (replace the text \"A\" with \"B\")",
    "draw boxes around X (outline / highlight / find X)",
    "try this garment on the person (put this shirt on him)",
    "use the reference for X (make X look like the reference)",
    "make X look Y / edit X so that ... (a prompt writer describes the new X)",
)
FORMS_TEXT = "; ".join(FORMS) + "; and several of these joined by 'and', 'then', ',' or ';'"


@dataclass(frozen=True)
class Intent:
    """One clause's edit. ``form`` is remove | replace | insert | recolor | write | replace_text | highlight |
    try_on | reference | edit; the other fields are filled as the form needs them."""

    form: str
    clause: str
    target: str = ""          # the object the edit is about ("cup")
    value: str = ""           # replacement / added object / text / colour
    position: str = ""        # a named place ("top left") for text
    preposition: str = ""     # for insert: on / near / ...
    color: str = ""           # text colour
    reference: int = 0        # which reference image (1-based) for try_on / reference
    prompt: str = ""          # for insert: what to add and where, in the user's words


_QUOTES = {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'", "\u00ab": '"', "\u00bb": '"'}
_QUOTED = re.compile(r'"([^"]*)"|(?<![\w])\'([^\']*)\'(?![\w])')
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")

_INJECTION = re.compile(
    r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(rules?|instructions?|prompts?|guidelines|restrictions|"
    r"polic(y|ies)|tools?)\b|\bsystem prompt\b|\bnodes?\b|\bksampler\b|\bsave ?image\b|\bload ?image\b|"
    r"\bcheckpoint\w*\b|\bclass_type\b|\bworkflows?\b|\bexec\b|\beval\b|\bimport\s+\w|__\w+__|\bsubprocess\b|"
    r"\bos\.\w|\brm\s+-rf\b|\bshell\b|\bapi[_ ]?keys?\b|\bpasswords?\b|\bjailbreak\b|\bdeveloper mode\b",
    re.IGNORECASE)

_VERBS = (r"remove|erase|delete|get rid of|take (?:out|away)|clear|eliminate|replace|swap|substitute|exchange|"
          r"change|turn|transform|convert|make|add|put|place|insert|include|recolou?r|colou?r|paint|dye|tint|"
          r"write|print|type|caption|label|draw|outline|highlight|mark|box|circle|frame|locate|find|detect|show|"
          r"point out|try|dress|use|apply|give|edit|modify|adjust|fix|redo|redraw|regenerate|restyle|ignore|disregard|"
          r"forget")
_FILLER = r"(?:(?:please|also|then|and|finally|next|first|lastly|now|can you|could you|would you|kindly)\s+)*"
_STARTS_CLAUSE = re.compile(rf"^{_FILLER}(?:{_VERBS})\b", re.IGNORECASE)
_SEPARATOR = re.compile(r"(\s*;\s*|\s*,\s*(?:and\s+)?(?:then\s+)?|\s+and\s+(?:then\s+)?|\s+then\s+|[.!?]\s+)",
                        re.IGNORECASE)

# Colours a recolour tool can parse (CSS names), and common words for them.
_COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white",
                "gray", "grey", "silver", "gold", "golden", "beige", "cyan", "magenta", "turquoise", "teal", "navy",
                "maroon", "olive", "lime", "indigo", "lavender", "crimson", "coral", "salmon", "khaki", "tan",
                "ivory", "aqua", "azure", "cream", "burgundy", "emerald", "mint", "charcoal")
_COLOR_WORDS = {"golden": "gold", "cream": "#fffdd0", "burgundy": "#800020", "emerald": "#50c878",
                "mint": "#98ff98", "charcoal": "#36454f"}
_CSS_COMPOUNDS = {"lightblue", "lightgreen", "lightgray", "lightgrey", "lightpink", "lightyellow", "lightcyan",
                  "lightsalmon", "darkblue", "darkgreen", "darkred", "darkgray", "darkgrey", "darkorange",
                  "darkviolet", "darkcyan", "darkmagenta", "darkolivegreen", "skyblue", "hotpink", "deeppink",
                  "navyblue", "deepskyblue", "palegreen", "darkkhaki", "limegreen", "forestgreen", "royalblue"}
# Two-word colours are listed whole: "sky" or "forest" alone is an object, not a shade ("turn the sky pink").
_COLOR = (r"(?:#[0-9a-f]{6}|#[0-9a-f]{3}|sky blue|navy blue|royal blue|forest green|lime green|hot pink|deep pink|"
          r"(?:(?:light|dark|bright|pale|deep|pastel|neon)\s+)?(?:" + "|".join(_COLOR_NAMES) + r"))")

_GARMENTS = {
    "upper": ("shirt", "t-shirt", "tshirt", "jacket", "top", "sweater", "hoodie", "blouse", "coat", "jumper",
              "cardigan", "vest", "blazer", "polo"),
    "lower": ("pants", "trousers", "jeans", "skirt", "shorts", "leggings"),
    "overall": ("dress", "outfit", "suit", "jumpsuit", "garment", "clothes", "clothing", "gown", "uniform",
                "costume", "reference"),
}
_GARMENT = "(?:" + "|".join(sorted((g for gs in _GARMENTS.values() for g in gs), key=len, reverse=True)) + ")"
_PERSON = r"(?:him|her|them|the person|the man|the woman|the astronaut|the model|the guy|the girl|the boy|me)"

_WHOLE_IMAGE = {"image", "photo", "picture", "pic", "whole image", "whole photo", "entire image", "everything",
                "scene", "whole scene", "shot"}
POSITIONS = ("top", "bottom", "left", "right", "center", "top left", "top right", "bottom left", "bottom right")
_POSITION_WORDS = {"upper": "top", "lower": "bottom", "centre": "center", "middle": "center"}
_DEMONSTRATIVE_REF = r"(?:this|that|the|my|these)(?:\s+same)?"  # "the same shirt": session memory


def normalise(text: str) -> str:
    for fancy, plain in _QUOTES.items():
        text = text.replace(fancy, plain)
    return re.sub(r"\s+", " ", text).strip()


def cut_quotes(text: str) -> tuple[str, list[str]]:
    """Quoted strings -> placeholders; returns the text and the quoted strings, verbatim."""
    quoted: list[str] = []

    def keep(match):
        quoted.append(match.group(1) if match.group(1) is not None else match.group(2))
        return f"\x00{len(quoted) - 1}\x00"

    return _QUOTED.sub(keep, text), quoted


def split_clauses(text: str) -> list[str]:
    """Splits at ';', ',', 'and', 'then' and sentence ends, but only where a new verb starts, so
    'remove the salt and pepper' stays one clause."""
    parts = _SEPARATOR.split(text)
    clauses = [parts[0]]
    for separator, fragment in zip(parts[1::2], parts[2::2]):
        if _STARTS_CLAUSE.match(fragment.strip()):
            clauses.append(fragment)
        else:
            clauses[-1] += separator + fragment
    return [c for c in (_clean_clause(c) for c in clauses) if c]


def _clean_clause(clause: str) -> str:
    clause = re.sub(rf"^{_FILLER}", "", clause.strip(), flags=re.IGNORECASE)
    clause = re.sub(r"[\s.!?,;:]+$", "", clause)
    return re.sub(r"\s+please$", "", clause, flags=re.IGNORECASE).strip()


class Grammar:
    """Parses one instruction; ``quoted`` holds its quoted strings (placeholders refer to them)."""

    def __init__(self, references: int, recall: Callable[[str], str | None] | None = None):
        self.references = references
        self.quoted: list[str] = []
        self.reference_uses = 0
        self.last_target = ""
        # Session memory (agent/session/memory.recall): "it" / "the glass" -> "session:<region>", or None.
        self.recall = recall

    def parse(self, instruction: str) -> list[Intent]:
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise PlannerDeclined(f"the instruction is {len(instruction)} characters long; the offline planner reads "
                                  f"at most {MAX_INSTRUCTION_CHARS}: split it into several turns")
        text, self.quoted = cut_quotes(normalise(instruction))
        if not text.strip(" .!?") and not self.quoted:
            raise PlannerDeclined("the instruction is empty; say what to change, e.g. 'remove the cup'")
        if _INJECTION.search(text):
            raise PlannerDeclined("this instruction asks to change how the editor works (its rules, nodes or code), "
                                  "not to edit the image; plans may only use the catalogued editing tools")
        return [self._clause(c) for c in split_clauses(text)]

    def restore(self, text: str, keep_quotes: bool = True) -> str:
        q = '"' if keep_quotes else ""
        return _PLACEHOLDER.sub(lambda m: q + self.quoted[int(m.group(1))] + q, text).strip()

    # --- one clause -------------------------------------------------------------------------
    def _clause(self, clause: str) -> Intent:
        for parse in (self._try_on, self._replace_text, self._write, self._highlight, self._reference, self._free_edit, self._recolor,
                      self._remove, self._replace, self._insert):
            intent = parse(clause)
            if intent is not None:
                if intent.target:
                    self.last_target = intent.target
                return intent
        words = self.restore(clause)
        words = words if len(words) <= 120 else words[:117] + "..."
        raise PlannerDeclined(f"the offline planner does not understand {words!r}. It plans these "
                              f"forms: {FORMS_TEXT}. For other edits, use an LLM planner")

    def _match(self, pattern: str, clause: str):
        return re.match(pattern + r"$", clause, re.IGNORECASE)

    def _object(self, phrase: str) -> str:
        """'the cup on the left from the photo' -> 'cup on the left'; 'it' -> the last object named."""
        phrase = self.restore(phrase)
        phrase = re.sub(r"\s+(?:from|in|of|on)\s+(?:the|this|my)\s+(?:image|photo|picture|pic|scene|shot)$", "",
                        phrase, flags=re.IGNORECASE)
        phrase = re.sub(r"^(?:all\s+(?:of\s+)?)?(?:the|a|an|this|that|these|those)\s+", "", phrase, flags=re.IGNORECASE)
        phrase = phrase.strip(" .,!?;:")
        if phrase.lower() in ("it", "them", "that", "this", "one", "him", "her", "same", "same one", "same thing"):
            remembered = self.recall(phrase) if self.recall and not self.last_target else None
            if not self.last_target and not remembered:
                raise PlannerDeclined(f"say which object {phrase!r} is, e.g. 'remove the cup'")
            return self.last_target or remembered
        phrase = re.sub(r"^same\s+", "", phrase, flags=re.IGNORECASE)  # "the same hat": the hat
        remembered = self.recall(phrase) if self.recall and phrase and phrase.lower() not in _WHOLE_IMAGE else None
        if remembered:
            return remembered
        if phrase.lower() in _WHOLE_IMAGE:
            raise PlannerDeclined("edits of the whole image (style, size, lighting) are outside the offline planner's "
                                  f"forms, which edit named objects: {FORMS_TEXT}. For other edits, use an LLM planner")
        if not phrase:
            raise PlannerDeclined("say which object to edit, e.g. 'remove the cup'")
        return phrase

    def _words(self, phrase: str) -> str:
        return self.restore(phrase).strip(" .,!?;:")

    def _reference_number(self, text: str) -> int:
        match = re.search(r"\b(second|2nd|third|3rd|first|1st|other)\b|reference[ _]?(\d)", text, re.IGNORECASE)
        self.reference_uses += 1
        if match and match.group(2):
            return int(match.group(2))
        words = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "other": 2, "third": 3, "3rd": 3}
        if match:
            return words[match.group(1).lower()]
        return self.reference_uses if self.reference_uses <= max(self.references, 1) else 1

    # --- forms --------------------------------------------------------------------------------
    def _try_on(self, c: str) -> Intent | None:
        g, p = rf"{_DEMONSTRATIVE_REF}\s+(?:reference\s+)?(?P<g>{_GARMENT})", rf"(?P<p>{_PERSON}|.+?)"
        m = (self._match(rf"(?:try|put)\s+(?:on\s+)?{g}(?:\s+image)?\s+on\s+{p}", c)
             or self._match(rf"try\s+on\s+{g}(?:\s+image)?", c)
             or self._match(rf"dress\s+{p}\s+in\s+{g}", c)
             or self._match(rf"(?:make|let)\s+{p}\s+wear\s+{g}", c)
             or self._match(rf"(?:put|place)\s+{g}\s+on\s+(?P<p2>{_PERSON})", c))
        if m is None:
            return None
        garment = m.group("g").lower()
        kind = next(k for k, words in _GARMENTS.items() if garment in words)
        return Intent("try_on", self.restore(c), target=garment, value=kind,
                      reference=self._reference_number(c))

    def _write(self, c: str) -> Intent | None:
        quoted = _PLACEHOLDER.search(c)
        m = self._match(r"label\s+(?P<x>.+?)\s+(?:as\s+|with\s+)?(?P<q>\x00\d+\x00)", c)
        if m:
            return Intent("write", self.restore(c), target=self._object(m.group("x")),
                          value=self.restore(m.group("q"), keep_quotes=False))
        m = self._match(r"(?P<verb>write|print|type|caption(?:\s+(?:it|the image|the photo))?|"
                        r"(?:add|put|place|draw)(?=.*(?:\x00|\btext\b|\bcaption\b|\bwords?\b|\btitle\b|\bslogan\b)))"
                        r"\s+(?P<rest>.+)", c)
        if m is None:
            return None
        rest, color = m.group("rest"), ""
        cm = re.search(rf"\s*\bin\s+(?:big\s+|bold\s+|large\s+|small\s+)*(?P<c>{_COLOR})"
                       r"(?:\s+(?:letters|text|font|ink|type|colou?r))?\b", rest, re.IGNORECASE)
        if cm:
            color, rest = color_value(cm.group("c")), rest[:cm.start()] + rest[cm.end():]
        kind = re.match(r"(?:an?\s+|the\s+)?(?P<kind>text|caption|words?|title|heading|slogan|label)\b\s*", rest,
                        re.IGNORECASE)
        default_position = "bottom" if m.group("verb").lower().startswith("caption") else "center"
        if kind:
            rest = rest[kind.end():]
            default_position = {"caption": "bottom", "title": "top", "heading": "top"}.get(
                kind.group("kind").lower(), default_position)
        lm = re.search(r"\s+(?P<prep>at|on|in|along|across|to|over|above|below|under|near)\s+(?P<loc>[^\x00]+)$",
                       rest, re.IGNORECASE)
        loc = lm.group("loc") if lm else ""
        text_part = rest[:lm.start()] if lm else rest
        if quoted:
            text = self.restore(_PLACEHOLDER.search(c).group(0), keep_quotes=False)
        else:
            text = re.sub(r"^(?:saying|that says|reading)\s+", "", text_part.strip(), flags=re.IGNORECASE).strip(" :")
        if not text:
            return None
        position = position_name(loc) if loc else default_position
        if loc and not position and re.sub(r"^(?:the|this|my)\s+", "", loc.lower()).strip(" .") in _WHOLE_IMAGE:
            position = default_position  # "on the image": anywhere, so the default place
        target = "" if position or not loc else self._object(loc)
        return Intent("write", self.restore(c), target=target, value=text, position=position, color=color)

    def _replace_text(self, c: str) -> Intent | None:
        """'change the sign to say "OPEN"', 'replace the text "SALE" with "SOLD"', 'change the text on the
        sign to "OPEN"'. The target is what the grounding looks for: the old text, or the text on X."""
        text_words = r"(?:text|words?|writing|lettering|wording|inscription)"
        quoted = r"(?P<old>\x00\d+\x00)"
        m = (self._match(rf"(?:replace|change|swap|substitute)\s+(?:the\s+)?(?:{text_words}\s+)?{quoted}\s+"
                         r"(?:with|to|into|for|by)\s+(?P<y>.+)", c)
             or self._match(rf"(?:replace|change|edit|update|rewrite)\s+(?:the\s+)?{text_words}\s+(?:on|of|in)\s+"
                            r"(?P<x>.+?)\s+(?:to\s+say|to\s+read|to|with|into)\s+(?P<y>.+)", c)
             or self._match(r"(?:change|edit|update|make|set|rewrite)\s+(?P<x>.+?)\s+(?:so\s+(?:that\s+)?it\s+)?"
                            r"(?:to\s+)?(?:says?|reads?)\s+(?P<y>.+)", c))
        if m is None:
            return None
        new = re.sub(r"^(?:say|read|saying|reading)\s+", "", self._words(self.restore(m.group("y"), keep_quotes=False)),
                     flags=re.IGNORECASE).strip(" :")
        if not new:
            return None
        groups = m.groupdict()
        if groups.get("old"):
            old = self.restore(groups["old"], keep_quotes=False).strip()
            target = f'the text "{old}"' if old else "text"
        else:
            holder = self._object(groups["x"])
            target = "text" if re.fullmatch(text_words, holder, re.IGNORECASE) else f"text on the {holder}"
        return Intent("replace_text", self.restore(c), target=target, value=new)

    def _highlight(self, c: str) -> Intent | None:
        m = (self._match(r"(?:draw|put|add)\s+(?:a\s+)?(?:bounding\s+|red\s+)?(?:box|boxes|rectangles?|outlines?|"
                         r"frames?|circles?)\s+(?:around|on|over|at)\s+(?P<x>.+)", c)
             or self._match(r"show\s+(?:me\s+)?where\s+(?P<x>.+?)\s+(?:is|are)", c)
             or self._match(r"(?:outline|highlight|mark|box|circle|frame|locate|find|detect|point out|show)\s+"
                            r"(?:me\s+)?(?P<x>.+)", c))
        if m is None:
            return None
        return Intent("highlight", self.restore(c), target=self._object(m.group("x")))

    def _reference(self, c: str) -> Intent | None:
        ref = r"(?:(?:the\s+)?(?:first|second|other|1st|2nd|3rd|third)\s+)?(?:reference|ref)(?:[ _]?\d)?(?:\s+image)?"
        demo = rf"(?:{_DEMONSTRATIVE_REF}\s+)?"
        m = (self._match(rf"use\s+{demo}{ref}\s+(?:for|on|as|to (?:change|edit|replace))\s+(?P<x>.+)", c)
             or self._match(rf"make\s+(?P<x>.+?)\s+look\s+like\s+(?:{demo}(?:one|object|thing)\s+in\s+)?{demo}{ref}", c)
             or self._match(rf"(?:replace|swap)\s+(?P<x>.+?)\s+(?:with|for)\s+(?:{demo}(?:one|object|thing)\s+"
                            rf"(?:in|from)\s+)?{demo}{ref}", c)
             or self._match(rf"(?:change|turn)\s+(?P<x>.+?)\s+(?:into|to)\s+"
                            rf"(?:{demo}(?:one|object|thing)\s+(?:in|from)\s+)?{demo}{ref}", c))
        if m is None and self.references:
            m = self._match(r"(?:replace|swap)\s+(?P<x>.+?)\s+with\s+(?:this|that)(?:\s+one)?", c)
        if m is None:
            return None
        return Intent("reference", self.restore(c), target=self._object(m.group("x")),
                      reference=self._reference_number(c))

    def _free_edit(self, c: str) -> Intent | None:
        m = (self._match(r"make\s+(?P<x>.+?)\s+look\s+(?P<y>.+)", c)
             or self._match(r"(?:edit|change|modify|adjust|fix|redo|redraw|restyle)\s+(?P<x>.+?)\s+so\s+"
                            r"(?:that\s+)?(?P<y>.+)", c)
             or self._match(r"(?:fix|redo|redraw|regenerate|restyle)\s+(?P<x>.+)", c))
        if m is None:
            return None
        description = m.groupdict().get("y") or ""
        if re.fullmatch(rf"(?:like\s+)?(?:an?\s+)?{_COLOR}(?:\s+colou?r(?:ed)?)?", description, re.IGNORECASE):
            colour = re.search(_COLOR + r"(?=\s+colou?r|$)", description, re.IGNORECASE).group(0)
            return Intent("recolor", self.restore(c), target=self._object(m.group("x")), value=color_value(colour))
        return Intent("edit", self.restore(c), target=self._object(m.group("x")), value=self._words(description))

    def _recolor(self, c: str) -> Intent | None:
        m = (self._match(rf"change\s+the\s+colou?r\s+of\s+(?P<x>.+?)\s+(?:to|into)\s+(?P<c>{_COLOR})", c)
             or self._match(rf"(?:recolou?r|colou?r|paint|dye|tint)\s+(?P<x>.+?)\s+(?:in\s+|to\s+|into\s+)?"
                            rf"(?P<c>{_COLOR})(?:\s+colou?r)?", c)
             or self._match(rf"(?:make|turn|change|convert)\s+(?P<x>.+?)\s+(?:to\s+|into\s+)?(?P<c>{_COLOR})"
                            r"(?:\s+colou?r(?:ed)?)?", c))
        if m is None:
            return None
        return Intent("recolor", self.restore(c), target=self._object(m.group("x")), value=color_value(m.group("c")))

    def _remove(self, c: str) -> Intent | None:
        m = (self._match(r"(?:remove|erase|delete|get rid of|take (?:out|away)|clear|eliminate|wipe out|cut out)\s+"
                         r"(?P<x>.+)", c)
             or self._match(r"make\s+(?P<x>.+?)\s+(?:disappear|vanish|go away)", c))
        if m is None:
            return None
        return Intent("remove", self.restore(c), target=self._object(m.group("x")))

    def _replace(self, c: str) -> Intent | None:
        m = (self._match(r"(?:replace|swap|exchange)\s+(?P<x>.+?)\s+(?:with|by|for)\s+(?P<y>.+)", c)
             or self._match(r"(?:change|turn|transform|convert|make)\s+(?P<x>.+?)\s+(?:into|to)\s+(?P<y>.+)", c)
             or self._match(r"make\s+(?P<x>.+?)\s+(?P<y>(?:a|an)\s+(?!(?:bit|little|lot)\b).+)", c))
        if m is None or re.search(r"\b(?:bigger|smaller|larger|brighter|darker|lighter|more|less)\b", m.group("y"),
                                  re.IGNORECASE):
            return None
        return Intent("replace", self.restore(c), target=self._object(m.group("x")), value=self._words(m.group("y")))

    def _insert(self, c: str) -> Intent | None:
        preps = (r"next to|in front of|on top of|to the left of|to the right of|onto|on|near|beside|by|into|inside|"
                 r"under|over|above|below|behind|to|in|at")
        m = (self._match(rf"(?:add|put|place|insert|include|draw|paint)\s+(?P<y>.+?)\s+(?P<prep>{preps})\s+"
                         r"(?P<x>.+)", c)
             or self._match(r"give\s+(?P<x>.+?)\s+(?P<y>(?:a|an|some)\s+.+)", c))
        if m:
            prep = m.groupdict().get("prep") or "on"
            words = f"{m.group('y')} {prep} {m.group('x')}"
            return Intent("insert", self.restore(c), target=self._object(m.group("x")), value=self._words(m.group("y")),
                          preposition=prep.lower(), prompt=self._words(words))
        m = self._match(r"(?:add|insert|include)\s+(?P<y>.+)", c)
        if m:
            return Intent("insert", self.restore(c), value=self._words(m.group("y")), prompt=self._words(m.group("y")))
        return None


def color_value(words: str) -> str:
    """A colour phrase as a value the tools parse: 'light blue' -> 'lightblue', 'golden' -> 'gold'."""
    words = re.sub(r"\s+", " ", words.strip().lower())
    if words.startswith("#"):
        return words
    joined = words.replace(" ", "")
    if joined in _CSS_COMPOUNDS:
        return "navy" if joined == "navyblue" else joined
    base = words.split(" ")[-1]
    return _COLOR_WORDS.get(base, base)


def position_name(location: str) -> str:
    """'the top left corner' -> 'top left'; '' when the phrase is not a named place."""
    words = re.sub(r"[-_]", " ", location.lower())
    words = re.sub(r"\b(?:the|of|image|photo|picture|corner|edge|side|part|area|frame|this)\b", " ", words)
    words = [_POSITION_WORDS.get(w, w) for w in words.split()]
    if len(words) == 2 and words[0] in ("left", "right") and words[1] in ("top", "bottom"):
        words = words[::-1]
    if len(words) == 2 and words[1] == "center" and words[0] in ("top", "bottom"):
        words = words[:1]
    name = " ".join(words)
    return name if name in POSITIONS else ""
