"""Grounding output parsing and coordinate mapping (pure; no model).

Expected pixels are worked out by hand in the comments. Frames used:

* image 1000x750 under max_pixels = 1280*28*28: sides rounded to 28 -> 1008x756 (762048 pixels,
  under the cap), so x and y both scale by 1000/1008 = 750/756 = 125/126: 126 -> 125, 252 -> 250,
  378 -> 375, 504 -> 500, 630 -> 625, 756 -> 750, 1008 -> 1000.
* VisionReasoner: 840x840 squash of the same image: x * 1000/840 (84 -> 100), y * 750/840 (84 -> 75).
"""

import math

import pytest

from agentic_edit.engines.geometry import Box, Point
from agentic_edit.engines.grounding_parse import (GroundingResult, input_size_from_grid, parse_grounding,
                                                  smart_resize, split_thinking)

IMAGE = (1000, 750)
QWEN_FRAME = (1008, 756)
VR_FRAME = (840, 840)


def qwen(text):
    return parse_grounding(text, IMAGE, QWEN_FRAME)


def vr(text):
    return parse_grounding(text, IMAGE, VR_FRAME)


def approx_box(box, x1, y1, x2, y2, label=None):
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((x1, y1, x2, y2), abs=1e-9)
    assert box.label == label


# ---- smart_resize -------------------------------------------------------------------------------

def test_smart_resize_rounds_each_side_to_the_nearest_multiple_of_28():
    # 750/28 = 26.79 -> 27 -> 756; 1000/28 = 35.71 -> 36 -> 1008; 762048 <= 1003520 so no scaling
    assert smart_resize(750, 1000, max_pixels=1280 * 28 * 28) == (756, 1008)


def test_smart_resize_scales_down_by_the_square_root_and_floors():
    # 756*1008 = 762048 > 200704: beta = sqrt(750000/200704) = 1.93309;
    # 750/1.93309/28 = 13.86 -> 13 -> 364; 1000/1.93309/28 = 18.48 -> 18 -> 504
    assert smart_resize(750, 1000, max_pixels=256 * 28 * 28) == (364, 504)


def test_smart_resize_scales_small_images_up_and_ceils():
    # 10x20: rounded sides 0x28 -> area 0 < 3136: beta = sqrt(3136/200) = 3.9598;
    # 10*3.9598/28 = 1.41 -> 2 -> 56; 20*3.9598/28 = 2.83 -> 3 -> 84
    assert smart_resize(10, 20, min_pixels=3136) == (56, 84)


def test_smart_resize_rounds_halves_to_even_like_python_and_transformers():
    # 42/28 = 1.5 -> 2 (-> 56); 70/28 = 2.5 -> 2 (-> 56), not 3
    assert smart_resize(42, 70, min_pixels=3136) == (56, 56)


def test_smart_resize_rejects_extreme_aspect_ratios():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2500)


def test_input_size_from_grid_reads_patches_times_14():
    assert input_size_from_grid([[1, 54, 72]]) == (1008, 756)
    torch = pytest.importorskip("torch")
    assert input_size_from_grid(torch.tensor([[1, 26, 36]])) == (504, 364)


# ---- Qwen2.5-VL JSON ----------------------------------------------------------------------------

def test_fenced_json_list_of_boxes_maps_to_the_original_image():
    text = ('```json\n[\n\t{"bbox_2d": [126, 252, 504, 630], "label": "cat"},\n'
            '\t{"bbox_2d": [630, 126, 1008, 756], "label": "dog"}\n]\n```')
    result = qwen(text)
    assert isinstance(result, GroundingResult)
    assert result.found and result.reason == "found 2 object(s)"
    assert len(result.boxes) == 2
    approx_box(result.boxes[0], 125, 250, 500, 625, "cat")
    approx_box(result.boxes[1], 625, 125, 1000, 750, "dog")
    assert result.labels == ["cat", "dog"]
    assert result.thinking == "" and result.raw_text == text
    assert result.image_size == IMAGE and result.input_size == QWEN_FRAME


def test_scaled_down_frame_maps_exactly():
    # frame 504x364 (max_pixels 256*28*28): x * 1000/504, y * 750/364; 252 -> 500, 182 -> 375
    result = parse_grounding('[{"bbox_2d": [126, 91, 252, 182]}]', IMAGE, (504, 364))
    approx_box(result.boxes[0], 250, 187.5, 500, 375)


def test_point_only_answer_keeps_the_point_without_a_box():
    result = qwen('```json\n[{"point_2d": [252, 378], "label": "cup"}]\n```')
    assert result.found
    assert result.boxes == []
    assert result.objects[0].box is None
    assert result.points == [Point(250.0, 375.0)]
    assert result.objects[0].label == "cup"


def test_box_and_point_per_object_stay_together():
    result = qwen('[{"bbox_2d": [126, 126, 504, 504], "point_2d": [252, 252], "label": "a"},'
                  ' {"bbox_2d": [630, 378, 1008, 756], "point_2d": [756, 630], "label": "b"}]')
    first, second = result.objects
    approx_box(first.box, 125, 125, 500, 500, "a")
    assert first.points == (Point(250.0, 250.0),)
    approx_box(second.box, 625, 375, 1000, 750, "b")
    assert second.points == (Point(750.0, 625.0),)


def test_prose_around_the_json_is_ignored():
    result = qwen('Sure! Here is the result: [{"bbox_2d": [126, 126, 252, 252], "label": "hat"}] '
                  'The hat is on the left [really].')
    assert result.found
    approx_box(result.boxes[0], 125, 125, 250, 250, "hat")


def test_truncated_output_keeps_the_complete_objects():
    result = qwen('```json\n[\n  {"bbox_2d": [126, 126, 252, 252], "label": "a"},\n  {"bbox_2d": [504, 5')
    assert result.found
    assert len(result.boxes) == 1
    approx_box(result.boxes[0], 125, 125, 250, 250, "a")
    assert "cut off" in result.reason


def test_truncated_before_any_complete_object_is_not_found_with_the_reason():
    result = qwen('```json\n[\n  {"bbox_2d": [126, 126, 25')
    assert not result.found and result.objects == ()
    assert "cut off before its first complete object" in result.reason


def test_single_quotes_and_trailing_commas_are_read():
    result = qwen("[{'bbox_2d': [126, 126, 252, 252], 'label': 'cat'},]")
    assert result.found
    approx_box(result.boxes[0], 125, 125, 250, 250, "cat")


def test_reversed_corners_are_swapped():
    result = qwen('[{"bbox_2d": [504, 630, 126, 252]}]')
    approx_box(result.boxes[0], 125, 250, 500, 625)


def test_coordinates_outside_the_image_are_clamped():
    # 1134 * 125/126 = 1125 > 1000 -> 1000; negatives -> 0
    result = qwen('[{"bbox_2d": [-126, -126, 1134, 504], "point_2d": [1260, -5]}]')
    approx_box(result.boxes[0], 0, 0, 1000, 500)
    # points stay on a pixel: x in [0, W-1], y in [0, H-1]
    assert result.points == [Point(999.0, 0.0)]
    assert "clipped" in result.reason


def test_boxes_entirely_outside_the_image_are_dropped_and_explained():
    result = qwen('[{"bbox_2d": [2000, 2000, 3000, 3000]}]')
    assert not result.found
    assert "outside the image" in result.reason


def test_exact_and_near_duplicates_with_the_same_label_are_dropped():
    result = qwen('[{"bbox_2d": [126, 126, 504, 504], "label": "cat"},'
                  ' {"bbox_2d": [126, 126, 504, 504], "label": "cat"},'
                  ' {"bbox_2d": [126, 126, 504, 505], "label": "cat"},'
                  ' {"bbox_2d": [126, 126, 504, 504], "label": "dog"}]')
    assert [b.label for b in result.boxes] == ["cat", "dog"]
    assert result.reason.count("duplicate") == 2


def test_nested_box_lists_and_numbers_as_strings_are_read():
    result = qwen('[{"bbox_2d": [["126", "126", "252", "252"]], "label": "x"}]')
    approx_box(result.boxes[0], 125, 125, 250, 250, "x")


def test_a_single_object_instead_of_a_list_is_read():
    result = qwen('{"bbox_2d": [126, 126, 252, 252], "label": "lamp"}')
    approx_box(result.boxes[0], 125, 125, 250, 250, "lamp")


def test_xml_points_form():
    result = qwen('<points x1="126" y1="252" x2="504" y2="630" alt="two cups">two cups</points>')
    assert result.found
    assert result.objects[0].points == (Point(125.0, 250.0), Point(500.0, 625.0))
    assert result.objects[0].label == "two cups"
    assert result.boxes == []


def test_ref_box_form():
    result = qwen("<ref>the dog</ref><box>(126,252),(504,630)</box>")
    approx_box(result.boxes[0], 125, 250, 500, 625, "the dog")


@pytest.mark.parametrize("text, reason", [
    ("There is no giraffe in this image.", "no matching object"),
    ("None", "no matching object"),
    ("```json\n[]\n```", "empty list"),
    ("", "no text"),
    ("   \n", "no text"),
    ("a red car", "holds no boxes or points"),
])
def test_not_found_answers_give_an_empty_result_with_the_reason(text, reason):
    result = qwen(text)
    assert result.found is False
    assert result.objects == () and result.boxes == [] and result.points == []
    assert reason in result.reason


@pytest.mark.parametrize("text", [
    '[{"bbox_2d": [1, 2, 3, 4]} oops ]]',
    '[{"bbox_2d": "left side"}]',
    '[{"bbox_2d": [1, 2, 3]}]',
    '[{"label": "cat"}]',
    '[{"bbox_2d": [NaN, 1, 2, 3]}]',
    '[true, null, "x"]',
    "\x08\ufffd14\ufffd[{",
    "```json\n{{{{]]]]\n```",
])
def test_malformed_output_never_raises(text):
    result = qwen(text)
    assert result.found is False
    assert result.reason


def test_mismatched_brackets_are_reported_as_unreadable():
    result = qwen('[{"bbox_2d": [126, 126, 252, 252}]')
    assert not result.found
    assert "could not read the model output as JSON" in result.reason


# ---- VisionReasoner / Seg-Zero ------------------------------------------------------------------

def test_vision_reasoner_answer_with_thinking_maps_from_840():
    text = ("<think>The user wants the cat. There are two animals; the cat is on the left.</think>"
            '<answer>[{"bbox_2d": [84, 168, 420, 672], "point_2d": [252, 336]},'
            ' {"bbox_2d": [504, 84, 840, 840], "point_2d": [672, 420]}]</answer>')
    result = vr(text)
    assert result.found
    assert result.thinking.startswith("The user wants the cat.")
    # x * 1000/840: 84 -> 100, 420 -> 500, 252 -> 300, 504 -> 600, 840 -> 1000, 672 -> 800
    # y * 750/840:  168 -> 150, 672 -> 600, 336 -> 300, 84 -> 75, 840 -> 750, 420 -> 375
    first, second = result.objects
    approx_box(first.box, 100, 150, 500, 600)
    assert first.points == (Point(300.0, 300.0),)
    approx_box(second.box, 600, 75, 1000, 750)
    assert second.points == (Point(800.0, 375.0),)


def test_seg_zero_single_object_with_two_points():
    text = ('<think>one mug</think><answer>{"bbox": [84, 168, 420, 672], "points_1": [168, 252],'
            ' "points_2": [336, 504]}</answer>')
    result = vr(text)
    assert len(result.objects) == 1
    approx_box(result.boxes[0], 100, 150, 500, 600)
    # 168 -> 200 / 225; 336 -> 400, 504 -> 450
    assert result.objects[0].points == (Point(200.0, 225.0), Point(400.0, 450.0))


def test_vision_reasoner_truncated_inside_the_reasoning():
    result = vr("<think>First I look at the left side of the image and")
    assert not result.found
    assert result.thinking.startswith("First I look")
    assert "no answer after its reasoning" in result.reason


@pytest.mark.parametrize("answer", ["[]", "None", "no such object"])
def test_vision_reasoner_empty_answers(answer):
    result = vr(f"<think>I cannot see a unicorn.</think><answer>{answer}</answer>")
    assert not result.found
    assert "no matching object" in result.reason
    assert result.thinking == "I cannot see a unicorn."


def test_vision_reasoner_unclosed_answer_tag_is_read_to_the_end():
    result = vr('<think>ok</think><answer>[{"bbox_2d": [84, 84, 168, 168], "point_2d": [126, 126]}]')
    approx_box(result.boxes[0], 100, 75, 200, 150)
    assert result.points == [Point(150.0, 112.5)]


def test_split_thinking():
    assert split_thinking("<think> a </think> <answer> b </answer>") == ("a", "b")
    assert split_thinking("<think>a</think> plain") == ("a", "plain")
    assert split_thinking("plain") == ("", "plain")


def test_to_dict_is_json_ready():
    import json

    result = qwen('[{"bbox_2d": [126, 126, 252, 252], "point_2d": [189, 189], "label": "cat"}]')
    data = json.loads(json.dumps(result.to_dict()))
    assert data["found"] is True
    assert data["objects"][0]["box"] == {"x": 125, "y": 125, "width": 125, "height": 125, "label": "cat"}
    assert data["objects"][0]["points"] == [{"x": 187.5, "y": 187.5}]


def test_sizes_must_be_positive():
    with pytest.raises(ValueError, match="sizes must be positive"):
        parse_grounding("[]", (0, 10), (28, 28))


def test_boxes_are_geometry_boxes():
    box = qwen('[{"bbox_2d": [126, 126, 252, 252]}]').boxes[0]
    assert isinstance(box, Box)
    assert math.isclose(box.area, 125 * 125)
