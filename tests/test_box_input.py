"""Boxes and points typed by hand (the Make Boxes tool's engine)."""

import json

import pytest

from agentic_edit.engines.box_input import make_boxes, make_points, parse_boxes
from agentic_edit.engines.geometry import GeometryInputError, boxes_to_wire


def corners(frames):
    return [[(b.x1, b.y1, b.x2, b.y2, b.label) for b in frame] for frame in frames]


def test_numbers_make_one_box_with_a_label():
    frames = make_boxes("", 10, 20, 100, 50, label=" sign ")
    assert corners(frames) == [[(10, 20, 110, 70, "sign")]]
    assert boxes_to_wire(frames) == [[{"x": 10, "y": 20, "width": 100, "height": 50, "label": "sign"}]]


@pytest.mark.parametrize("text", [
    '{"x": 10, "y": 20, "width": 100, "height": 50}',
    '{"x1": 10, "y1": 20, "x2": 110, "y2": 70}',
    '{"bbox_2d": [10, 20, 110, 70]}',
    '[10, 20, 110, 70]',
    '[[10, 20, 110, 70]]',
    '[{"x": 10, "y": 20, "width": 100, "height": 50}]',
])
def test_every_json_form_gives_the_same_box(text):
    assert corners(make_boxes(text, label="thing")) == [[(10, 20, 110, 70, "thing")]]


def test_json_labels_are_kept_and_per_image_lists_too():
    text = json.dumps([[{"x": 0, "y": 0, "width": 5, "height": 5, "label": "a"}],
                       [[1, 1, 4, 4], {"bbox_2d": [2, 2, 8, 9], "label": "b"}]])
    frames = make_boxes(text, label="default")
    assert corners(frames) == [[(0, 0, 5, 5, "a")], [(1, 1, 4, 4, "default"), (2, 2, 8, 9, "b")]]
    # Widgets are ignored when JSON is given.
    assert corners(make_boxes("[1, 2, 3, 4]", 50, 50, 10, 10)) == [[(1, 2, 3, 4, None)]]


def test_bad_boxes_are_clear_errors():
    with pytest.raises(GeometryInputError, match="not valid JSON"):
        make_boxes("[1, 2,")
    with pytest.raises(GeometryInputError, match="no area"):
        parse_boxes('[5, 5, 5, 20]')
    with pytest.raises(GeometryInputError, match="width and height must be above 0"):
        make_boxes("", 0, 0, 0, 10)
    with pytest.raises(GeometryInputError, match="x, y, width, height"):
        make_boxes('{"left": 3}')


def test_points_from_json():
    points = make_points('[{"x": 5, "y": 9}, [7, 8]]', "positive_points")
    assert [(p.x, p.y, p.positive) for p in points] == [(5, 9, True), (7, 8, True)]
    assert [p.positive for p in make_points("[[1, 2]]", "negative_points", positive=False)] == [False]
    assert make_points("  ", "positive_points") == []
    with pytest.raises(GeometryInputError, match=r"negative_points\[0\]"):
        make_points('[{"x": 1}]', "negative_points")
