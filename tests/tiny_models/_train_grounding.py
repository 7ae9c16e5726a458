"""Overfit a tiny Qwen2.5-VL so that it answers every grounding request with one fixed box.

A random-weight model never writes a box, so every end-to-end test of "segment by text", "remove
the cat" or the agent would stop at "nothing found". This module teaches the tiny model behind
the ``VisionReasoner-7B`` name one answer, whatever the image and the query::

    <think>it is in the middle</think><answer>[{"bbox_2d": [210,210,630,630], "point_2d": [420,420]}]</answer>

a box over the middle half of VisionReasoner's 840x840 squash with its centre as the interior
point, so that it maps to the middle half of any image (``x * W / 840``, ``y * H / 840``).

The training inputs are the engine's own: ``GroundingEngine.ground`` runs on each image and query
with a stand-in model that records what it would pass to ``generate`` (the prompt template, the
840x840 squash, the processor's pixel limits), so the trained model sees exactly what inference
gives it. Each step pairs one of 32 queries (1 to ~500 characters) with one of 16 images (drawn
ones and scikit-image photos the tests do not use); only the answer tokens and the closing
``<|im_end|>`` carry loss. The vision tower stays random and frozen (its features are computed
once per image): the text model learns to ignore them and the query, which is what makes the
answer the same for unseen images and queries. Fixed seeds and one thread: the checkpoint comes
out bit-identical on every build (on one machine and torch version).
"""

from __future__ import annotations

import contextlib
import logging
import math

log = logging.getLogger(__name__)

ANSWER = ('<think>it is in the middle</think>'
          '<answer>[{"bbox_2d": [210,210,630,630], "point_2d": [420,420]}]</answer>')


def answer_box(width: int, height: int) -> tuple[float, float, float, float]:
    """ANSWER's box on an image of ``width`` x ``height`` pixels, (x1, y1, x2, y2): its middle half."""
    return width / 4, height / 4, 3 * width / 4, 3 * height / 4


def answer_point(width: int, height: int) -> tuple[float, float]:
    """ANSWER's interior point on an image of ``width`` x ``height`` pixels: its centre."""
    return width / 2, height / 2


# Queries of every length (the engine lower-cases them and strips ".\"?!"): written ones, then
# ones put together from WORDS (digits and punctuation too: the answer is made of them), so the
# answer depends neither on the wording nor on where the prompt ends. Checked: unseen queries of
# up to ~600 characters get the answer; far longer ones may not.
TRAIN_QUERIES = ("the cat", "the cup", "the man on the left", "it", "Red car.", "the small dog near the door?",
                 "a hat", "everything", "the second window from the top, next to the tree")
WORDS = ("the", "a", "left", "right", "red", "blue", "person", "dog", "car", "on", "of", "with", "big", "small",
         "window", "bottle", "near", "behind", "shirt", "face", "sky", "text", "logo", "and", "in", "top",
         "2", "3rd", "10", "it's", "man's", "(left)", "\"sale\"", "-", ",", "/", "#1", ":", "café", "猫")
QUERIES = 32
# Photos from scikit-image's bundled data (no download) that the tests do not use (they use
# coffee, astronaut and chelsea), beside drawn images: the text model must meet the vision
# tower's features of real photos as well as of noise and flat colour.
TRAIN_PHOTOS = ("rocket", "hubble_deep_field", "immunohistochemistry", "colorwheel", "camera", "coins", "page")
# (width, height) of the drawn training images (after the 840x840 squash every image gives the
# same token grid: what varies is what the vision tower sees).
DRAWN_SIZES = ((64, 48), (48, 64), (96, 96), (130, 70), (40, 40), (72, 90), (120, 80), (50, 110), (80, 80))


class _Handle:
    """Stands in for the model store's handle: ``use()`` lends the bundle (the checkpoint being
    trained is not on disk yet, so the engine must not go through the store)."""

    def __init__(self, bundle):
        self.bundle = bundle

    @contextlib.contextmanager
    def use(self):
        yield self.bundle


class _RecordingModel:
    """Stands in for the model inside ``GroundingEngine.ground``: keeps the tensors it is asked to
    ``generate`` from and writes nothing (the engine then reports a clean 'not found')."""

    def __init__(self, model):
        self.model = model
        self.inputs: dict | None = None

    @property
    def dtype(self):
        return self.model.dtype

    @property
    def generation_config(self):
        return self.model.generation_config

    def parameters(self):
        return self.model.parameters()

    def generate(self, input_ids, **kwargs):
        import torch

        self.inputs = {"input_ids": input_ids,
                       **{k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}}
        return input_ids


def engine_for(model, processor, name: str = "VisionReasoner-7B"):
    """A ``GroundingEngine`` for ``name`` (its convention comes from the name) running on this
    in-memory model and processor instead of loading through the model store."""
    from ..pack import import_pack

    import_pack()
    from agentic_edit.engines.grounding import GroundingEngine, QwenVL

    engine = GroundingEngine(name)
    handle = _Handle(QwenVL(model, processor))
    engine.load = lambda: handle
    return engine


def engine_inputs(model, processor, image, query: str) -> dict:
    """The tensors ``GroundingEngine.ground(image, query)`` feeds the model's ``generate``."""
    recorder = _RecordingModel(model)
    engine_for(recorder, processor).ground(image, query, max_new_tokens=1)
    if recorder.inputs is None:
        raise RuntimeError("GroundingEngine.ground did not call generate; cannot record its inputs")
    return recorder.inputs


def training_images(seed: int) -> list:
    """Float RGB images: drawn ones of the DRAWN_SIZES (noise, gradients, flat grey or colour,
    blobs, stripes, a sky over ground) and the TRAIN_PHOTOS."""
    import numpy as np
    from skimage import data

    rng = np.random.default_rng(seed)
    images = []
    for index, (width, height) in enumerate(DRAWN_SIZES):
        kind = index % 8
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        image = np.zeros((height, width, 3), np.float32)
        if kind == 0:
            image = rng.random((height, width, 3), dtype=np.float32)
        elif kind == 1:
            image += (xx / width)[..., None] * rng.random(3, dtype=np.float32)
        elif kind == 2:
            image += rng.random()  # flat grey
        elif kind == 3:
            image += rng.random(3, dtype=np.float32)  # flat colour
        elif kind == 4:
            image += rng.random()
            for _ in range(4):
                cx, cy, r = rng.random() * width, rng.random() * height, 4 + rng.random() * height / 3
                image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.random(3)
        elif kind == 5:
            image += ((xx // (4 + 8 * rng.random())) % 2)[..., None] * rng.random(3, dtype=np.float32)
        elif kind == 6:
            image += (yy / height)[..., None] * rng.random(3, dtype=np.float32)
            image[yy > height * (0.3 + 0.4 * rng.random())] = rng.random(3)
        else:
            image = (rng.random((height, width, 3)) > 0.5).astype(np.float32)
        images.append(image)
    for name in TRAIN_PHOTOS:
        photo = np.asarray(getattr(data, name)(), np.float32) / 255
        images.append(np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3])
    return images


def training_queries(seed: int) -> list[str]:
    """QUERIES queries: TRAIN_QUERIES, then ones put together from WORDS (a few paragraph-long)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    queries = list(TRAIN_QUERIES)
    while len(queries) < QUERIES:
        longest = 120 if len(queries) % 4 == 0 else 30
        queries.append(" ".join(rng.choice(WORDS, size=int(rng.integers(1, longest)))))
    return queries


def _target_ids(processor, answer: str):
    """The answer's tokens and the ``<|im_end|>`` that ends the reply (generation stops there)."""
    import torch

    tokenizer = processor.tokenizer
    ids = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    return torch.cat([ids, torch.tensor([tokenizer.convert_tokens_to_ids("<|im_end|>")])])


def _image_features(model, inputs: dict):
    """The frozen vision tower's output for the image in ``inputs`` (what the model would compute
    from its pixels)."""
    import torch

    with torch.no_grad():
        return model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)


def _example(inputs: dict, features, target) -> dict:
    """Model inputs for one request (as the engine recorded them) with the target appended but
    its last token (nothing is predicted after it), and the image's features in place of pixels."""
    import torch

    prompt, given = inputs["input_ids"][0], target[:-1]
    example = {
        "input_ids": torch.cat([prompt, given])[None],
        "attention_mask": torch.cat([inputs["attention_mask"][0], torch.ones_like(given)])[None],
        "image_grid_thw": inputs["image_grid_thw"],
        "mm_encoder_outputs": {"image": features},
    }
    if "mm_token_type_ids" in inputs:  # 1 on image tokens: the answer is text
        example["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"][0], torch.zeros_like(given)])[None]
    return example


def _answer_logits(model, example, target):
    """Logits at the positions that predict each target token (the model's greedy choices there)."""
    return model(**example, logits_to_keep=len(target)).logits[0]


def _training_set(model, processor, seed: int) -> tuple[list[dict], list]:
    """The engine's inputs for each training query and the vision features of each training image.

    VisionReasoner squashes every image to 840x840, so the prompt's tokens (900 image pads
    included) do not depend on the image: any query's inputs go with any image's features, and
    each training step draws a pair of its own."""
    images, queries = training_images(seed), training_queries(seed)
    prompts = [engine_inputs(model, processor, images[0], query) for query in queries]
    features = [_image_features(model, engine_inputs(model, processor, image, queries[0])) for image in images]
    grid = prompts[0]["image_grid_thw"]
    if any(not prompt["image_grid_thw"].equal(grid) for prompt in prompts):
        raise RuntimeError("the grounding engine no longer gives every image the same token grid; "
                           "pair each query with its own image's features")
    return prompts, features


@contextlib.contextmanager
def _one_thread():
    """Train on one CPU thread: matrices this small gain nothing from more, on a busy machine the
    extra threads' spinning made steps ten times slower, and the result no longer depends on how
    many cores the machine has."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_to_answer(model, processor, answer: str = ANSWER, steps: int = 250, lr: float = 5e-3,
                    seed: int = 0) -> list[float]:
    """Train ``model`` in place (AdamW, fixed seed, one random query x image pair per step, cosine
    schedule) to reply ``answer`` then ``<|im_end|>`` to every grounding request; returns the loss
    per step. The vision tower stays as it is (frozen).

    Tuned on the width-64 tiny model: 200 steps left long queries unanswered, and lr 8e-3 settled
    on a near-tie between two of the answer's tokens."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    target = _target_ids(processor, answer)
    model.train()
    model.model.visual.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses: list[float] = []
    with _one_thread():
        prompts, features = _training_set(model, processor, seed)
        pairs = torch.stack([torch.randint(len(prompts), (steps,)), torch.randint(len(features), (steps,))], dim=1)
        for step, (prompt, image) in enumerate(pairs.tolist()):
            example = _example(prompts[prompt], features[image], target)
            loss = F.cross_entropy(_answer_logits(model, example, target), target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % 50 == 0 or step == steps - 1:
                log.info("grounding answer training step %d/%d: loss %.4f", step + 1, steps, losses[-1])
    model.eval()
    model.model.rope_deltas = None  # left by the last training batch; generation computes its own
    return losses


def answer_margin(model, processor, image, query: str, answer: str = ANSWER) -> float:
    """The smallest lead of the answer's token over the runner-up, across the answer's positions,
    when the model is fed ``image`` and ``query`` as the engine feeds them. Positive: greedy
    decoding writes exactly ``answer`` then stops (each step sees the right prefix)."""
    import torch

    target = _target_ids(processor, answer)
    with torch.no_grad(), _one_thread():
        inputs = engine_inputs(model, processor, image, query)
        logits = _answer_logits(model, _example(inputs, _image_features(model, inputs), target), target)
    chosen = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf")).max(dim=1).values
    model.model.rope_deltas = None
    return float((chosen - others).min())
