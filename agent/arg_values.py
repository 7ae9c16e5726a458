"""Literal argument values in a plan: checked and normalised against the catalogue's ``Arg``.

A planner (an LLM above all) writes numbers as strings, booleans as words and colours as lists.
Only conversions that lose nothing are made, so the plan that runs is exactly the plan that was
meant:

* ``int``: an integer, an integral float (``3.0``) or an integer string (``"3"``); never ``2.5``.
* ``float``: any finite number or numeric string (``"0.5"`` -> ``0.5``); an int becomes a float.
* ``bool``: ``true``/``false``, the strings ``"true"``/``"false"`` (any case) or the integers 0/1.
* ``string``: a string; an integer (``2024``) becomes its digits; a list or object (boxes written as
  JSON, for example) becomes its JSON text.
* ``choice``: one of the choices, matched case-insensitively and returned in the catalogue's
  spelling. Choices that the catalogue computes at run time (a callable: installed models, fonts)
  are never computed here; any non-empty string passes and the node checks it.
* ``color``: a non-empty string, or a list of 3/4 channel numbers 0..255 (-> ``"r, g, b"``); the tool
  itself parses it (the agent imports no engine).

Ranges are checked, never clamped: a value out of range is a mistake the planner should hear about.
"""

from __future__ import annotations

import json
import math
import re

from ..catalogue.spec import Arg

MAX_STRING_CHARS = 10_000  # far above any prompt or caption; longer is a runaway generation

_INT_TEXT = re.compile(r"^[+-]?\d+$")
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class ArgValueError(ValueError):
    """A literal that does not fit its argument; the message says what would."""


def describe_kind(arg: Arg) -> str:
    """The kind of value an argument takes, in words an LLM can act on ("a number from 0 to 1")."""
    kind = arg.kind
    if kind in ("int", "float"):
        what = "a whole number" if kind == "int" else "a number"
        if arg.minimum is not None and arg.maximum is not None:
            return f"{what} from {_num(arg.minimum)} to {_num(arg.maximum)}"
        if arg.minimum is not None:
            return f"{what} of at least {_num(arg.minimum)}"
        if arg.maximum is not None:
            return f"{what} of at most {_num(arg.maximum)}"
        return what
    if kind == "bool":
        return "true or false"
    if kind == "choice":
        if callable(arg.choices):
            return "the name of an installed option"
        return "one of " + ", ".join(repr(c) for c in arg.choices)
    if kind == "color":
        return "a colour such as 'red' or '#ff0000'"
    if kind == "string":
        return "text"
    return f"a connection to {kind_noun(kind)}"


def kind_noun(kind: str) -> str:
    """'an image', 'a mask', 'boxes', ... for messages."""
    return {"image": "an image", "mask": "a mask", "boxes": "boxes", "points": "points",
            "int": "a whole number", "float": "a number", "string": "text", "bool": "a true/false value",
            "choice": "a choice", "color": "a colour"}.get(kind, kind)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def coerce_value(arg: Arg, value):
    """``value`` as ``arg`` takes it (see the module docstring), or ``ArgValueError``."""
    kind = arg.kind
    if value is None:
        raise ArgValueError(f"is null; it must be {describe_kind(arg)}")
    if kind == "int":
        result = _as_int(value, arg)
    elif kind == "float":
        result = _as_float(value, arg)
    elif kind == "bool":
        return _as_bool(value, arg)
    elif kind == "string":
        return _as_string(value)
    elif kind == "choice":
        return _as_choice(value, arg)
    elif kind == "color":
        return _as_color(value)
    else:  # a link kind never takes a literal; plan.validate reports that before calling here
        raise ArgValueError(f"is a connection ({kind_noun(kind)}), not a literal value")
    if arg.minimum is not None and result < arg.minimum or arg.maximum is not None and result > arg.maximum:
        raise ArgValueError(f"is {_num(result)}, out of range: it must be {describe_kind(arg)}")
    return result


def _as_int(value, arg: Arg) -> int:
    if isinstance(value, bool):
        raise ArgValueError(f"is {json.dumps(value)}; it must be {describe_kind(arg)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_TEXT.match(value.strip()):
        return int(value.strip())
    raise ArgValueError(f"is {show_value(value)}; it must be {describe_kind(arg)}")


def _as_float(value, arg: Arg) -> float:
    if isinstance(value, bool):
        raise ArgValueError(f"is {json.dumps(value)}; it must be {describe_kind(arg)}")
    try:
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            result = float(value.strip())
        else:
            raise ArgValueError(f"is {show_value(value)}; it must be {describe_kind(arg)}")
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ArgValueError(f"is {show_value(value)}; it must be a finite number ({describe_kind(arg)})")
    return result


def _as_bool(value, arg: Arg) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ArgValueError(f"is {show_value(value)}; it must be {describe_kind(arg)}")


def _as_string(value) -> str:
    if isinstance(value, bool):
        raise ArgValueError(f"is {json.dumps(value)}; it must be text")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, (list, dict)):
        value = json.dumps(value)
    elif not isinstance(value, str):
        raise ArgValueError(f"is {show_value(value)}; it must be text")
    if len(value) > MAX_STRING_CHARS:
        raise ArgValueError(f"is {len(value)} characters long; at most {MAX_STRING_CHARS} are allowed")
    return value


def _as_choice(value, arg: Arg) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ArgValueError(f"is {show_value(value)}; it must be {describe_kind(arg)}")
    if callable(arg.choices):  # computed from what is installed: only the node can check it
        return value
    for choice in arg.choices:
        if choice == value or choice.lower() == value.strip().lower():
            return choice
    raise ArgValueError(f"is {show_value(value)}, which is not allowed; it must be {describe_kind(arg)}")


def _as_color(value) -> str:
    if isinstance(value, str) and value.strip():
        if len(value) > 100:
            raise ArgValueError("is too long for a colour; write a name such as 'red' or a hex colour")
        return value.strip()
    if (isinstance(value, (list, tuple)) and len(value) in (3, 4)
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                    and 0 <= c <= 255 for c in value)):
        return ", ".join(_num(c) for c in value)
    raise ArgValueError(f"is {show_value(value)}; it must be a colour such as 'red', '#ff0000' or [255, 0, 0]")


def show_value(value) -> str:
    """A value as a plan would write it (JSON), cut short for messages."""
    text = json.dumps(value) if isinstance(value, (str, int, float, list, dict, bool)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
