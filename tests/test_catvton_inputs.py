"""What the try-on needs besides CatVTON: the clothes mask found by words (grounding + SAM-2, no
detectron2), the garment made from words (SDXL text-to-image), and the planner's try_on step."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_edit.engines.cloth_mask import PHRASES, ClothMaskError, check_coverage, find_clothes, phrase_for
from agentic_edit.engines.garment_gen import GarmentGenerationError, GarmentGenerator
from agentic_edit.engines.grounding_parse import parse_grounding


@pytest.fixture(scope="module")
def store(tiny_models_dir):
    from agentic_edit.models import free

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tiny_models_dir
    for family in ("sdxl_text_to_image", "catvton_unet", "catvton_vae"):
        free(family)


class NobodyThere:
    """A grounding model that honestly answers that nothing matches (the real parser reads it)."""

    def __init__(self):
        self.queries = []

    def ground(self, image, query, **kwargs):
        self.queries.append(query)
        return parse_grounding("<think>no person here</think><answer>[]</answer>",
                               (image.shape[1], image.shape[0]), (840, 840))


def test_cloth_types_become_phrases_and_a_phrase_of_ones_own_wins():
    assert phrase_for("upper").startswith("the clothes on the person's upper body")
    assert phrase_for("lower", "  the red skirt ") == "the red skirt"
    assert set(PHRASES) == {"upper", "lower", "overall"}
    with pytest.raises(ClothMaskError, match="cloth_type: 'hat' is not one of upper, lower, overall"):
        phrase_for("hat")


def test_the_clothes_mask_comes_from_grounding_and_sam2_inside_the_box(store, photo_astronaut):
    found = find_clothes(photo_astronaut, "overall", grounding_model="VisionReasoner-7B",
                         sam_model="sam2.1-hiera-large", grow=0)
    assert found.phrase == PHRASES["overall"] and found.objects == 1
    solid = found.mask >= 0.5
    assert 0 < solid.mean() < 1
    # the tiny grounding model answers the middle half of any image: nothing outside that box
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    assert rows[0] >= 127 and rows[-1] <= 385 and cols[0] >= 127 and cols[-1] <= 385


def test_no_person_found_is_a_clear_error(photo_chelsea):
    grounder = NobodyThere()
    with pytest.raises(ClothMaskError, match="no person wearing 'the jacket' was found"):
        find_clothes(photo_chelsea, "upper", "the jacket", grounder=grounder, segmenter=object())
    assert grounder.queries == ["the jacket"]


@pytest.mark.parametrize("fill, message", [(0.0, "mask is empty"), (1.0, "covers the whole photo")])
def test_a_found_mask_covering_nothing_or_everything_is_refused(fill, message):
    with pytest.raises(ClothMaskError, match=message):
        check_coverage(np.full((20, 30), fill, np.float32), "the shirt")


def test_a_garment_made_from_words_is_tried_on(store, photo_astronaut):
    from agentic_edit.engines.catvton import CatVTONEngine

    calls = []
    garment = GarmentGenerator().generate("a red linen shirt", seed=1, steps=2, progress=lambda s, t: calls.append(s))
    assert calls == [1, 2]
    assert garment.shape == (32, 24, 3) and garment.dtype == np.float32   # the tiny SDXL's native 32, in 3:4
    assert 0.0 <= garment.min() and garment.max() <= 1.0
    again = GarmentGenerator().generate("a red linen shirt", seed=1, steps=2)
    assert np.array_equal(garment, again)
    person = photo_astronaut.astype(np.float32) / 255
    mask = np.zeros(person.shape[:2], np.float32)
    mask[230:420, 130:380] = 1
    result = CatVTONEngine().try_on(person, garment, mask, steps=1, height=64, width=48)
    assert result.image.shape == person.shape


def test_garment_generation_refuses_no_words_and_models_that_are_not_text_to_image(store):
    with pytest.raises(GarmentGenerationError, match="describe the garment"):
        GarmentGenerator().generate("   ")
    inpainting = store / "diffusers" / "stable-diffusion-xl-1.0-inpainting-0.1"
    with pytest.raises(GarmentGenerationError, match="not an SDXL text-to-image model"):
        GarmentGenerator(str(inpainting)).generate("a coat", steps=1)


def test_the_offline_planner_plans_try_on_against_the_real_catalogue():
    from agentic_edit.agent.planners import get_planner

    plan = get_planner("offline").plan("put this shirt on him", references=1)
    assert plan.tool_names == ["try_on"]
    step = plan.step("s1")
    assert step.inputs == {"image": "image", "garment": "reference"} and step.args["cloth_type"] == "upper"
    assert plan.output == "s1.image"


def test_the_catalogue_tool_defaults_are_valid_and_its_model_lists_show_the_installed_files(store):
    from agentic_edit.catalogue.tryon import TRY_ON

    assert [a.name for a in TRY_ON.args if a.optional] == ["garment", "mask"]
    assert [a.name for a in TRY_ON.args if a.agent] == ["image", "cloth_type", "garment_description", "mask_phrase",
                                                         "garment", "mask"]
    for arg in TRY_ON.args:
        if arg.kind in ("int", "float"):
            assert arg.minimum <= arg.default <= arg.maximum, arg.name
        if arg.kind == "choice":
            assert arg.default in arg.resolved_choices(), arg.name
    assert {o.name for o in TRY_ON.outputs} == {"image", "mask", "garment", "note"}
