"""The trained tiny VisionReasoner (tests/tiny_models/_train_grounding.py) answers through the real engine.

Workflow and agent tests need a grounding model that finds something; the tiny checkpoint under
``VisionReasoner-7B``'s name is trained at build time to answer every request with a box over the
middle half of the image and its centre. Here the real path runs on images and queries the
training never saw: model store -> processor -> greedy ``generate`` -> parse -> original pixels.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agentic_edit.engines.grounding import FAMILY, GroundingEngine
from agentic_edit.engines.grounding_parse import VISION_REASONER_SIZE
from agentic_edit.models import free
from tests.fixtures import tiny_models_root
from tests.pack import PACK_ROOT
from tests.tiny_models import _source_hash, all_models, ensure_models
from tests.tiny_models._train_grounding import ANSWER, answer_box, answer_point, training_queries

REASONER = "VisionReasoner-7B"
ANSWER_TOKENS = len(ANSWER.encode()) + 1  # byte-level tokenizer: one token a byte, then <|im_end|>
MAX_NEW_TOKENS = 160


@pytest.fixture(scope="module")
def models_dir():
    root = tiny_models_root()
    ensure_models(root, only=[REASONER])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENTIC_EDIT_MODELS_DIR", str(root))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield root
    free(FAMILY)


def _image(kind: str, width: int, height: int) -> np.ndarray:
    if kind == "sample":  # the photo the saved workflows load
        return np.asarray(Image.open(PACK_ROOT / "workflows" / "inputs" / "agentic_edit_sample.png").convert("RGB"))
    if kind == "noise":
        return np.random.default_rng(width * 1000 + height).random((height, width, 3), dtype=np.float32)
    return np.zeros((height, width, 3), np.float32)  # black


UNSEEN = [  # (image kind, width, height, query): images and queries the training never used
    ("sample", 451, 300, "the mug on the table"),
    ("noise", 45, 150, "The person on the right!"),
    ("black", 64, 64, "the green field below the horizon, left of the sun and next to nothing in particular"),
]


@pytest.mark.parametrize("kind,width,height,query", UNSEEN, ids=lambda v: str(v)[:12])
def test_answers_the_middle_half_of_any_image(models_dir, kind, width, height, query):
    assert query not in training_queries(seed=0)
    steps = []
    result = GroundingEngine(REASONER).ground(_image(kind, width, height), query, max_new_tokens=MAX_NEW_TOKENS,
                                              progress=lambda step, total: steps.append(step))
    # exactly the trained answer, ended by <|im_end|> (generation stopped well before the cap)
    assert result.raw_text == ANSWER
    assert steps[-1] == ANSWER_TOKENS < MAX_NEW_TOKENS
    assert result.found and result.reason
    assert result.thinking == "it is in the middle"
    assert result.input_size == (VISION_REASONER_SIZE, VISION_REASONER_SIZE)
    assert result.image_size == (width, height)
    (box,) = result.boxes
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx(answer_box(width, height))
    (point,) = result.points
    assert (point.x, point.y) == pytest.approx(answer_point(width, height))
    assert box.x1 < point.x < box.x2 and box.y1 < point.y < box.y2


def test_the_answer_needs_room_to_be_written(models_dir):
    # Cut short, the same answer is an unfinished object: a clean "not found" that says why.
    result = GroundingEngine(REASONER).ground(_image("noise", 100, 80), "the cat", max_new_tokens=60)
    assert result.found is False and result.objects == ()
    assert result.raw_text == ANSWER.encode()[:60].decode()
    assert "max_new_tokens" in result.reason


def test_the_build_stamp_covers_the_training_module():
    # Editing the training loop must rebuild the checkpoint: its source is hashed with the builder's.
    model = next(m for m in all_models() if m.name == REASONER)
    package = Path(__file__).parent / "tiny_models"
    digest = hashlib.sha256((package / "qwen2_5_vl.py").read_bytes())
    digest.update((package / "_train_grounding.py").read_bytes())
    digest.update(REASONER.encode())
    assert _source_hash(model) == digest.hexdigest()[:16]
