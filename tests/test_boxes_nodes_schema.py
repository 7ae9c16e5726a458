"""The catalogue entries of the text and box tools: complete, consistent, and the font menu live."""

import sys
import types

import pytest

from agentic_edit.catalogue import boxes, text
from agentic_edit.catalogue.spec import CATEGORY_ROOT, NODE_PREFIX
from agentic_edit.engines import box_render, fonts, text_draw

TOOLS = text.TOOLS + boxes.TOOLS
# Links a tool cannot work without; every other link (besides the image) is optional.
REQUIRED_LINKS = {"replace_text": {"boxes"}}


def test_names_ids_and_categories():
    assert [t.name for t in TOOLS] == ["draw_text", "replace_text", "render_boxes", "make_boxes"]
    assert [t.node_id for t in TOOLS] == [
        "AgenticEditDrawText", "AgenticEditReplaceText", "AgenticEditRenderBoxes", "AgenticEditMakeBoxes"]
    for tool in TOOLS:
        assert tool.node_id.startswith(NODE_PREFIX) and tool.category.startswith(CATEGORY_ROOT + "/")
        assert len(tool.description) > 40 and tool.outputs


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_every_argument_is_described_and_its_default_is_valid(tool):
    names = [a.name for a in tool.args]
    assert len(names) == len(set(names))
    # ComfyUI lists required inputs before optional ones; the catalogue keeps that same order.
    optional = [a.optional for a in tool.args]
    assert optional == sorted(optional)
    for arg in tool.args:
        assert len(arg.description) > 15, arg.name
        if arg.kind in ("int", "float"):
            assert arg.minimum <= arg.default <= arg.maximum, arg.name
            assert isinstance(arg.default, int if arg.kind == "int" else float), arg.name
        if arg.kind == "choice":
            assert arg.default in arg.resolved_choices(), arg.name
        if arg.kind == "bool":
            assert isinstance(arg.default, bool), arg.name
        if arg.kind in ("string", "color"):
            assert isinstance(arg.default, str), arg.name
        if arg.is_link and arg.name != "image":
            assert arg.optional != (arg.name in REQUIRED_LINKS.get(tool.name, ())), arg.name
    for out in tool.outputs:
        assert len(out.description) > 15


def test_text_choices_and_defaults_match_the_engine():
    tool = text.DRAW_TEXT
    assert tool.arg("align").resolved_choices() == list(text_draw.ALIGNS)
    assert tool.arg("valign").resolved_choices() == list(text_draw.VALIGNS)
    assert tool.arg("overflow").resolved_choices() == list(text_draw.OVERFLOWS)
    assert text.DEFAULT_FONT == fonts.DEFAULT_FONT
    # The catalogue's defaults are the engine's defaults, so a plan that leaves an argument out
    # draws what the node draws.
    import inspect

    engine_defaults = {k: p.default for k, p in inspect.signature(text_draw.draw_text).parameters.items()
                       if p.default is not inspect.Parameter.empty}
    for arg in tool.args:
        if arg.name in engine_defaults:
            assert arg.default == engine_defaults[arg.name], arg.name
    # The planner does not pick font files or debug-like options.
    assert not tool.arg("font").agent and not tool.arg("overflow").agent
    # Colour arguments accept their defaults.
    for name in ("color", "outline_color"):
        assert tool.arg(name).default == text_draw.AUTO
    assert tool.arg("backing").default == "none"


def test_render_boxes_defaults_mean_automatic_sizes():
    assert boxes.RENDER_BOXES.arg("line_width").default == 0  # 0 -> engine's auto_line_width
    assert box_render.auto_line_width(512, 512) >= 2


def test_font_menu_is_read_live_and_includes_comfyui_fonts_folder(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    assert text.font_dirs() == []
    assert text.DRAW_TEXT.arg("font").resolved_choices() == fonts.available_fonts()

    # Inside ComfyUI: the registered "fonts" folders; before registration, models/fonts.
    fake = types.ModuleType("folder_paths")
    fake.models_dir = str(tmp_path)
    registered: dict[str, list[str]] = {}

    def get_folder_paths(name):
        return registered[name]

    fake.get_folder_paths = get_folder_paths
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    assert text.font_dirs() == [str(tmp_path / "fonts")]
    (tmp_path / "mine").mkdir()
    registered["fonts"] = [str(tmp_path / "mine")]
    assert "Mine.ttf" not in text.DRAW_TEXT.arg("font").resolved_choices()
    (tmp_path / "mine" / "Mine.ttf").write_bytes(fonts.builtin_fonts()["DejaVuSans"].read_bytes())
    choices = text.DRAW_TEXT.arg("font").resolved_choices()
    assert choices[0] == fonts.DEFAULT_FONT and "Mine.ttf" in choices
