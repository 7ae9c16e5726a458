"""The text drawer: text fitted into boxes, drawn only inside them. Checked by rendering."""

import logging
import shutil

import numpy as np
import pytest

from agentic_edit.engines.colors import ColorInputError

from agentic_edit.engines import fonts
from agentic_edit.engines.fonts import FontError, available_fonts, load_font
from agentic_edit.engines.geometry import Box
from agentic_edit.engines.text_draw import (
    TextFitError, TextInputError, draw_text, fit_text, parse_color, regions_from_mask, wrap_text)


def grey(height=120, width=200, level=0.5):
    return np.full((height, width, 3), level, dtype=np.float32)


def changed_pixels(before, after):
    return np.any(before != after, axis=-1)


def ink_bbox(changed):
    """(left, top, right, bottom) of changed pixels, right/bottom exclusive."""
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def inside(changed, boxes):
    allowed = np.zeros_like(changed)
    for b in boxes:
        allowed[int(b.y1):int(b.y2), int(b.x1):int(b.x2)] = True
    return not (changed & ~allowed).any()


# ---- every changed pixel lies inside its box ----------------------------------------------

def test_changed_pixels_stay_inside_the_boxes():
    image = np.random.default_rng(0).random((120, 200, 3), dtype=np.float32)
    boxes = [Box(10, 10, 90, 50), Box(110, 20, 190, 110), Box(20, 70, 70, 115)]
    out, mask = draw_text(image, boxes, ["Hello", "A longer text that wraps", "Wg"],
                          outline=0.08, color="#ff0000", outline_color="white")
    changed = changed_pixels(image, out)
    assert changed.sum() > 300
    assert inside(changed, boxes)
    # The mask is the coverage of what was drawn: non-zero exactly where pixels changed.
    assert np.array_equal(mask > 0, changed)
    assert mask.dtype == np.float32 and mask.shape == (120, 200) and mask.max() <= 1.0
    # Anti-aliased: partial coverage exists at glyph edges.
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 20


def test_boxes_partly_outside_are_clipped_and_the_input_is_untouched():
    image = grey()
    copy = image.copy()
    boxes = [Box(-30.5, -10, 60.2, 40.7), Box(150, 80, 260, 200)]
    out, _ = draw_text(image, boxes, "CLIP ME", backing="#0000ff")
    assert np.array_equal(image, copy)
    changed = changed_pixels(image, out)
    assert changed[:41, :61].all() and changed[80:, 150:].all()  # backing fills the clipped boxes
    changed[:41, :61] = False
    changed[80:, 150:] = False
    assert not changed.any()


# ---- fitting -------------------------------------------------------------------------------

def test_text_is_fitted_to_fill_its_box():
    image = grey()
    box = Box(20, 20, 180, 100)
    out, _ = draw_text(image, [box], "Fit", padding=0.0)
    left, top, right, bottom = ink_bbox(changed_pixels(image, out))
    width_fill = (right - left) / box.width
    height_fill = (bottom - top) / box.height
    # Limited by one dimension: that one is (almost) filled.
    assert max(width_fill, height_fill) > 0.85


def test_bigger_box_gets_a_bigger_font():
    small = fit_text("Sale today", 80, 30)
    large = fit_text("Sale today", 160, 60)
    assert large.size > small.size * 1.6
    image = grey(150, 200)
    out, _ = draw_text(image, [Box(0, 0, 80, 30), Box(0, 50, 160, 110)], "Sale today")
    changed = changed_pixels(image, out)
    small_ink = ink_bbox(changed[:40])
    large_ink = ink_bbox(changed[45:])
    assert (large_ink[3] - large_ink[1]) > 1.6 * (small_ink[3] - small_ink[1])


def test_each_box_gets_its_own_text():
    image = grey(100, 220)
    boxes = [Box(0, 0, 100, 100), Box(120, 0, 220, 100)]
    out, _ = draw_text(image, boxes, ["I", "WWWWW"], padding=0.0)
    changed = changed_pixels(image, out)
    i_left, i_top, i_right, i_bottom = ink_bbox(changed[:, :100])
    w_left, w_top, w_right, w_bottom = ink_bbox(changed[:, 120:])
    # "I" is fitted by height (tall and narrow); "WWWWW" by width (wide and short).
    assert (i_bottom - i_top) > 80 and (i_right - i_left) < 30
    assert (w_right - w_left) > 85 and (w_bottom - w_top) < 30


def test_one_text_is_drawn_in_every_box():
    image = grey(60, 210)
    out, mask = draw_text(image, [Box(0, 0, 100, 60), Box(110, 0, 210, 60)], "Same", color="black")
    assert np.allclose(mask[:, :100], mask[:, 110:])


def test_long_text_wraps_on_words():
    layout = fit_text("the quick brown fox jumps over", 60, 150, min_size=6)
    assert len(layout.lines) >= 3
    assert not layout.broken_words
    assert " ".join(layout.lines) == "the quick brown fox jumps over"
    image = grey(160, 80)
    out, _ = draw_text(image, [Box(10, 5, 70, 155)], "the quick brown fox jumps over", padding=0.0)
    rows = changed_pixels(image, out).any(axis=1)
    bands = np.count_nonzero(np.diff(rows.astype(int)) == 1) + int(rows[0])
    assert bands >= 3


def test_a_word_too_long_for_the_box_is_broken_between_characters():
    layout = fit_text("Internationalisation", 40, 120, min_size=14)
    assert layout.broken_words and len(layout.lines) > 1
    assert "".join(layout.lines) == "Internationalisation"
    assert layout.size >= 14


def test_words_are_kept_whole_when_a_smaller_size_fits():
    layout = fit_text("Internationalisation", 120, 120, min_size=8)
    assert not layout.broken_words and layout.lines == ("Internationalisation",)


def test_wrap_text_modes():
    font = load_font("DejaVuSans", 20)
    assert wrap_text("one two", font, 1000) == ["one two"]
    assert wrap_text("one\ntwo", font, 1000) == ["one", "two"]
    assert wrap_text("abcdefghij", font, 30, breaking="never") is None
    pieces = wrap_text("abcdefghij", font, 30, breaking="chars")
    assert "".join(pieces) == "abcdefghij" and len(pieces) > 2
    assert wrap_text("W", font, 3, breaking="chars") is None
    assert wrap_text("WW", font, 3, breaking="force") == ["W", "W"]


# ---- alignment -----------------------------------------------------------------------------

@pytest.mark.parametrize("align", ["left", "center", "right"])
def test_horizontal_alignment_moves_the_ink(align):
    image = grey(100, 300)
    box = Box(0, 0, 300, 100)
    # min/max size fix the font so the short word leaves room to move sideways.
    out, _ = draw_text(image, [box], "Hi", align=align, min_size=40, max_size=40, padding=0.05)
    left, _, right, _ = ink_bbox(changed_pixels(image, out))
    if align == "left":
        assert left < 15
    elif align == "right":
        assert right > 285
    else:
        assert abs((left + right) / 2 - 150) < 6


@pytest.mark.parametrize("valign", ["top", "middle", "bottom"])
def test_vertical_alignment_moves_the_ink(valign):
    image = grey(300, 100)
    out, _ = draw_text(image, [Box(0, 0, 100, 300)], "Hi", valign=valign, min_size=30, max_size=30)
    _, top, _, bottom = ink_bbox(changed_pixels(image, out))
    expected = {"top": lambda: top < 15, "bottom": lambda: bottom > 285,
                "middle": lambda: abs((top + bottom) / 2 - 150) < 6}
    assert expected[valign]()


# ---- colours, outline, backing -------------------------------------------------------------

def test_text_colour_outline_and_auto_colour():
    image = grey(80, 160, level=0.5)
    out, mask = draw_text(image, [Box(0, 0, 160, 80)], "Red", color="#ff0000")
    solid = mask > 0.99
    assert solid.sum() > 100
    assert np.allclose(out[solid], [1.0, 0.0, 0.0], atol=1 / 255)

    out, mask = draw_text(image, [Box(0, 0, 160, 80)], "Red", color="red", outline=0.1, outline_color="#00ff00")
    greenish = (out[..., 1] > 0.9) & (out[..., 0] < 0.1)
    assert greenish.sum() > 50

    dark = grey(80, 160, level=0.1)
    out, mask = draw_text(dark, [Box(0, 0, 160, 80)], "Auto")
    assert (mask == 1.0).sum() > 100
    assert np.allclose(out[mask == 1.0], 1.0)   # white on dark
    light = grey(80, 160, level=0.9)
    out, mask = draw_text(light, [Box(0, 0, 160, 80)], "Auto")
    assert (mask == 1.0).sum() > 100
    assert np.allclose(out[mask == 1.0], 0.0)   # black on light


def test_backing_and_opacity():
    image = grey(60, 100, level=1.0)
    out, mask = draw_text(image, [Box(10, 10, 90, 50)], "ok", color="white", backing="#000000",
                          backing_opacity=0.5)
    assert np.allclose(mask[10:50, 10:90].min(), 0.5, atol=1e-3)
    assert np.allclose(out[12, 12], 0.5, atol=1e-3)  # half black over white
    assert (mask[:10] == 0).all() and (mask[50:] == 0).all()
    # A colour with its own opacity (#RRGGBBAA) draws half-transparent text.
    out, mask = draw_text(grey(60, 100, level=0.0), [Box(0, 0, 100, 60)], "ok", color="#ffffff80")
    assert 0.49 < mask.max() < 0.51


@pytest.mark.parametrize("value, expected", [
    ("#ff0000", (255, 0, 0, 255)), ("#f00", (255, 0, 0, 255)), ("00ff00", (0, 255, 0, 255)),
    ("#0000ff80", (0, 0, 255, 128)), ("white", (255, 255, 255, 255)), ("rgb(1, 2, 3)", (1, 2, 3, 255))])
def test_parse_color(value, expected):
    assert parse_color(value) == expected


# ---- Unicode -------------------------------------------------------------------------------

def test_unicode_text_and_missing_glyphs(caplog):
    image = grey(80, 200)
    out, _ = draw_text(image, [Box(0, 0, 200, 80)], "Grüße")
    assert changed_pixels(image, out).sum() > 200
    with caplog.at_level(logging.WARNING, logger="agentic_edit.engines.text_draw"):
        out, _ = draw_text(image, [Box(0, 0, 200, 80)], "日本 ok")
    # DejaVu has no CJK glyphs: drawn as missing-glyph boxes, with a warning naming them.
    assert changed_pixels(image, out).sum() > 200
    assert "日本" in caplog.text and "missing-glyph" in caplog.text


# ---- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_an_error(text):
    with pytest.raises(TextInputError, match="empty"):
        draw_text(grey(), [Box(0, 0, 50, 50)], text)
    with pytest.raises(TextInputError, match="box 1"):
        draw_text(grey(), [Box(0, 0, 50, 50), Box(60, 0, 110, 50)], ["fine", text])


def test_text_that_cannot_fit_is_an_error_naming_box_and_text():
    long_text = "this sentence is far too long for a tiny box"
    with pytest.raises(TextFitError, match=r"far too long.*box 0 .*min_size 12"):
        draw_text(grey(), [Box(0, 0, 30, 12)], long_text, min_size=12)


def test_overflow_shrink_goes_below_min_size():
    layout = fit_text("this sentence is far too long", 30, 12, min_size=12, overflow="shrink")
    assert layout.size < 12
    image = grey()
    out, _ = draw_text(image, [Box(0, 0, 30, 12)], "this sentence is far too long", min_size=12,
                       overflow="shrink")
    changed = changed_pixels(image, out)
    assert changed.any() and inside(changed, [Box(0, 0, 30, 12)])


def test_overflow_clip_draws_at_min_size_inside_the_box():
    image = grey()
    box = Box(5, 5, 45, 25)
    out, _ = draw_text(image, [box], "clipped text that is long", min_size=14, overflow="clip")
    changed = changed_pixels(image, out)
    assert changed.sum() > 50 and inside(changed, [box])


def test_zero_area_boxes_are_errors_naming_the_box():
    with pytest.raises(TextInputError, match=r"box 1 .*no area"):
        draw_text(grey(), [Box(0, 0, 50, 50), Box(300, 300, 400, 400)], "x")
    with pytest.raises(TextInputError, match=r"box 0 .*no area"):
        draw_text(grey(), [Box(20, 20, 20, 60)], "x")
    with pytest.raises(TextInputError, match="no box"):
        draw_text(grey(), [], "x")


def test_bad_options_are_errors():
    with pytest.raises(ColorInputError, match="color"):
        draw_text(grey(), [Box(0, 0, 50, 50)], "x", color="not-a-colour")
    with pytest.raises(ColorInputError, match="backing"):
        draw_text(grey(), [Box(0, 0, 50, 50)], "x", backing="#12")
    with pytest.raises(TextInputError, match="align"):
        draw_text(grey(), [Box(0, 0, 50, 50)], "x", align="justify")
    with pytest.raises(TextInputError, match="2 texts for 3 boxes"):
        draw_text(grey(), [Box(0, 0, 10, 10)] * 3, ["a", "b"])
    with pytest.raises(TextInputError, match="min_size"):
        draw_text(grey(), [Box(0, 0, 50, 50)], "x", min_size=40, max_size=20)
    with pytest.raises(TextInputError, match="overflow"):
        draw_text(grey(), [Box(0, 0, 50, 50)], "x", overflow="wrap")


# ---- fonts ---------------------------------------------------------------------------------

def test_builtin_fonts_are_listed_and_load():
    names = available_fonts()
    assert names[0] == fonts.DEFAULT_FONT and "DejaVuSans-Bold" in names and "DejaVuSerif" in names
    assert load_font("DejaVuSans", 20) is load_font("DejaVuSans", 20)  # cached
    image = grey(60, 160)
    regular, _ = draw_text(image, [Box(0, 0, 160, 60)], "Bold", min_size=30, max_size=30)
    bold, _ = draw_text(image, [Box(0, 0, 160, 60)], "Bold", min_size=30, max_size=30, font="DejaVuSans-Bold")
    assert changed_pixels(image, bold).sum() > 1.2 * changed_pixels(image, regular).sum()


def test_user_fonts_from_extra_dirs_and_absolute_paths(tmp_path):
    source = fonts.builtin_fonts()["DejaVuSerif"]
    (tmp_path / "serif").mkdir()
    shutil.copy(source, tmp_path / "serif" / "MySerif.ttf")
    (tmp_path / "notes.txt").write_text("not a font")
    names = available_fonts([tmp_path])
    assert "serif/MySerif.ttf" in names and "notes.txt" not in names
    assert load_font("serif/MySerif.ttf", 16, [tmp_path]).path == str(tmp_path / "serif" / "MySerif.ttf")
    out, mask = draw_text(grey(), [Box(0, 0, 100, 50)], "serif", font="serif/MySerif.ttf", font_dirs=[tmp_path])
    assert mask.sum() > 50
    assert load_font(str(source), 16).path == str(source)


def test_missing_and_unreadable_fonts_are_clear_errors(tmp_path):
    with pytest.raises(FontError, match=r"'Nope.ttf' not found.*looked for in.*" + str(tmp_path)):
        load_font("Nope.ttf", 12, [tmp_path])
    broken = tmp_path / "Broken.ttf"
    broken.write_bytes(b"this is not a font file")
    with pytest.raises(FontError, match="Broken.ttf is not a readable font"):
        load_font("Broken.ttf", 12, [tmp_path])
    with pytest.raises(FontError, match="not a readable font"):
        draw_text(grey(), [Box(0, 0, 50, 50)], "x", font=str(broken))
    with pytest.raises(FontError, match="not found"):
        load_font(str(tmp_path / "absent.otf"), 12)


# ---- regions from a mask -------------------------------------------------------------------

def test_regions_from_mask():
    mask = np.zeros((100, 200), np.float32)
    mask[60:90, 10:50] = 1.0     # lower left
    mask[10:40, 120:190] = 1.0   # upper right
    mask[12:38, 10:60] = 1.0     # upper left (same row as upper right)
    mask[95, 195] = 1.0          # a speck: dropped
    boxes = regions_from_mask(mask)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in boxes] == [
        (10, 12, 60, 38), (120, 10, 190, 40), (10, 60, 50, 90)]
    whole = regions_from_mask(mask, separate=False)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in whole] == [(10, 10, 196, 96)]
    with pytest.raises(TextInputError, match="empty"):
        regions_from_mask(np.zeros((10, 10)))
