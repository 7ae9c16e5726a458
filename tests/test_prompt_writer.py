"""The prompt writer (engines/prompt_writer.py): through the real ``openai`` client against the local
stub server, on the tiny random Qwen2.5-VL, and with no model at all."""

import base64
import io
import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from agentic_edit.engines import prompt_writer
from agentic_edit.engines.grounding import FAMILY, GroundingEngine
from agentic_edit.engines.imaging import ImageInputError
from agentic_edit.engines.llm_client import ChatClient
from agentic_edit.engines.llm_keys import ENV_CONFIG, ENV_KEY, ENV_OPENAI_KEY
from agentic_edit.engines.prompt_writer import (BACKGROUND_POSITIVE, DEFAULT_NEGATIVE, PROMPT_SCHEMA, LocalQwenBackend,
                                                PromptParseError, PromptWriterError, parse_prompt_reply,
                                                prompt_images, write_prompts)
from agentic_edit.models import free
from tests.fixtures import tiny_models_root
from tests.tiny_models import ensure_models

QWEN = "Qwen2.5-VL-7B-Instruct"
GOOD = {"positive": "a tabby cat sitting on a wooden chair, soft daylight, photorealistic",
        "negative": "dog, blurry, deformed"}


@pytest.fixture(autouse=True)
def no_keys(monkeypatch, tmp_path):
    for name in (ENV_KEY, ENV_OPENAI_KEY, ENV_CONFIG):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))


def scene(height=48, width=64):
    """A grey-blue photo and a mask over its centre."""
    image = np.zeros((height, width, 3), np.float32)
    image[...] = (0.3, 0.4, 0.6)
    mask = np.zeros((height, width), np.float32)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1.0
    return image, mask


def client_for(stub, **kwargs):
    return ChatClient(stub.base_url, "stub-vlm", max_retries=0, **kwargs)


def decode(url):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), np.float32) / 255


# ---- an OpenAI-compatible server --------------------------------------------------------------------

def test_prompts_from_the_server(openai_stub, monkeypatch):
    monkeypatch.setenv(ENV_KEY, "sk-test")
    openai_stub.reply_json(GOOD)
    image, mask = scene()
    result = write_prompts(image, mask, "  replace the dog   with a cat ", client_for(openai_stub))
    assert (result.positive, result.negative) == (GOOD["positive"], GOOD["negative"])
    assert result.source == "llm:stub-vlm" and "stub-vlm" in result.note and json.loads(result.raw) == GOOD

    request = openai_stub.chat_requests[0]
    assert request.bearer == "sk-test"
    assert request.json["response_format"]["type"] == "json_schema"
    assert request.json["response_format"]["json_schema"]["schema"] == PROMPT_SCHEMA
    system, user = request.json["messages"]
    assert system["role"] == "system" and "inpainting" in system["content"] and "removal" in system["content"]
    assert "Edit instruction: replace the dog with a cat" in request.text()
    # The photo, then the photo with the region marked in red.
    photo, marked = (decode(url) for url in request.image_urls())
    assert [p["type"] for p in user["content"]][:2] == ["image_url", "image_url"]
    inside = mask > 0.5
    assert abs(photo[inside].mean(0) - (0.3, 0.4, 0.6)).max() < 0.03
    assert marked[inside][:, 0].mean() > photo[inside][:, 0].mean() + 0.2  # tinted red
    assert abs(marked[2, 2] - photo[2, 2]).max() < 0.03  # far from the region: untouched


def test_tolerant_parse_when_the_server_has_no_structured_output(openai_stub):
    openai_stub.error(400, "response_format is not supported by this model")
    openai_stub.error(400, "json mode is not supported")
    openai_stub.reply('Sure! Here are the prompts:\n```json\n{"positive": "a red vintage bicycle", '
                      '"negative": "car"}\n```')
    image, mask = scene()
    result = write_prompts(image, mask, "replace the car with a bicycle", client_for(openai_stub))
    assert (result.positive, result.negative, result.source) == ("a red vintage bicycle", "car", "llm:stub-vlm")
    assert [r.json.get("response_format", {}).get("type") for r in openai_stub.chat_requests] == \
        ["json_schema", "json_object", None]


def test_missing_negative_gets_the_default(openai_stub):
    openai_stub.reply_json({"positive": "green grass lawn"})
    image, mask = scene()
    result = write_prompts(image, mask, "remove the ball", client_for(openai_stub))
    assert result.positive == "green grass lawn" and result.negative == DEFAULT_NEGATIVE
    assert "default" in result.note and result.source == "llm:stub-vlm"


@pytest.mark.parametrize("queue, expected", [
    (lambda stub: stub.error(500, "internal error"), "HTTP 500"),
    (lambda stub: stub.delay(3).reply_json(GOOD), "did not answer within"),
    (lambda stub: stub.raw("{not json at all", content_type="application/json"), "not valid JSON"),
    (lambda stub: stub.reply("I think the cat would look great there!"), "no JSON object"),
])
def test_server_failures_fall_back_with_a_note(openai_stub, queue, expected):
    queue(openai_stub)
    image, mask = scene()
    result = write_prompts(image, mask, "replace the dog with a cat", client_for(openai_stub, timeout=0.5))
    assert result.source == "fallback"
    assert expected in result.note and "llm:stub-vlm" in result.note and "fell back" in result.note
    assert result.positive == "a cat" and result.negative.startswith("dog, ")


def test_unreachable_server_falls_back_and_names_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    image, mask = scene()
    result = write_prompts(image, mask, "add a red hat on the man", ChatClient(url, "m", max_retries=0, timeout=2))
    assert result.source == "fallback" and url in result.note and "could not connect" in result.note
    assert result.positive == "a red hat"


def test_garbage_keeps_the_raw_answer_and_strict_raises(openai_stub):
    openai_stub.reply("}}}{{{ 12 34").reply("}}}{{{ 12 34")
    image, mask = scene()
    result = write_prompts(image, mask, "make the sky stormy", client_for(openai_stub))
    assert result.source == "fallback" and result.raw == "}}}{{{ 12 34"
    assert result.positive == "make the sky stormy" and result.negative == DEFAULT_NEGATIVE
    with pytest.raises(PromptWriterError, match="llm:stub-vlm"):
        write_prompts(image, mask, "make the sky stormy", client_for(openai_stub), strict=True)


# ---- no model ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("instruction, positive, negative_head", [
    ("Remove the dog.", BACKGROUND_POSITIVE, "dog, "),
    ("please erase all the people", BACKGROUND_POSITIVE, "people, "),
    ("replace the dog with a fluffy white cat", "a fluffy white cat", "dog, "),
    ("turn the car into a horse carriage", "a horse carriage", "car, "),
    ("add a straw hat on the woman", "a straw hat", "blurry"),
    ("a bowl of ripe oranges", "a bowl of ripe oranges", "blurry"),
])
def test_no_model_uses_the_instructions_words_and_says_so(instruction, positive, negative_head):
    image, mask = scene()
    result = write_prompts(image, mask, instruction, backend=None)
    assert result.source == "fallback" and result.raw == ""
    assert "no prompt model selected" in result.note and "fell back" in result.note
    assert result.positive == positive and result.negative.startswith(negative_head)
    assert result.negative.endswith(DEFAULT_NEGATIVE)


def test_bad_inputs_are_clear_errors():
    image, mask = scene()
    with pytest.raises(PromptWriterError, match="mask: empty"):
        write_prompts(image, np.zeros_like(mask), "remove the dog")
    with pytest.raises(PromptWriterError, match="instruction: empty"):
        write_prompts(image, mask, "   ")
    with pytest.raises(ImageInputError, match="mask"):
        write_prompts(image, mask[:10], "remove the dog")
    with pytest.raises(PromptWriterError, match="backend"):
        write_prompts(image, mask, "remove the dog", backend="gpt-4o")


def test_prompt_images_are_capped_and_outlined():
    image = np.full((600, 2400, 3), 0.5, np.float32)
    mask = np.zeros((600, 2400), np.float32)
    mask[200:400, 1000:1400] = 1
    photo, marked = prompt_images(image, mask)
    assert photo.shape == marked.shape == (256, 1024, 3)
    row = marked[128]
    # Inside: tinted; the outline just outside the region's left edge (x ~ 427): pure red.
    assert row[500, 0] > 0.7 and row[500, 1] < 0.35
    assert (row[418:427] == (1.0, 0.0, 0.0)).all(axis=1).any()
    assert np.allclose(marked[10, 10], 0.5, atol=0.01)


@pytest.mark.parametrize("answer, positive, negative", [
    ('{"positive": "a cat", "negative": "dog"}', "a cat", "dog"),
    ("<think>the region is a dog</think>\n{'positive': 'a cat', 'negative': 'dog',}", "a cat", "dog"),
    ('Here you go: {"Positive_Prompt": ["a cat", "studio light"], "negative_prompt": ""} Enjoy!',
     "a cat, studio light", ""),
    ("Positive: a cat on a sofa\nNegative: dog, blur", "a cat on a sofa", "dog, blur"),
    ('{"note": "x"} {"prompt": "a cat"}', "a cat", ""),
])
def test_parse_prompt_reply(answer, positive, negative):
    assert parse_prompt_reply(answer) == (positive, negative)


@pytest.mark.parametrize("answer, reason", [
    ("", "empty"), ("no structure here", "no JSON object"), ('{"positive": 12}', "not text"),
    ('{"positive": "1234 !!"}', "no words"), ('{"positive": "' + "cat " * 400 + '"}', "runaway"),
])
def test_parse_prompt_reply_refuses(answer, reason):
    with pytest.raises(PromptParseError, match=reason):
        parse_prompt_reply(answer)


# ---- the local Qwen2.5-VL ---------------------------------------------------------------------------

@pytest.fixture
def tiny_qwen(monkeypatch):
    root = tiny_models_root()
    ensure_models(root, only=[QWEN])
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(root))
    yield GroundingEngine(QWEN)
    free(FAMILY)


def test_local_qwen_runs_and_keeps_the_contract(tiny_qwen):
    image, mask = scene()
    result = write_prompts(image, mask, "replace the dog with a cat", LocalQwenBackend(tiny_qwen, max_new_tokens=8))
    # Random weights write garbage: either it happens to parse, or a fallback that says why.
    assert result.source in ("local:" + QWEN, "fallback")
    assert result.positive and result.negative and result.note
    if result.source == "fallback":
        assert f"local:{QWEN}" in result.note and result.positive == "a cat"


def test_local_qwen_answer_is_parsed_and_sees_both_images(tiny_qwen, monkeypatch):
    answer = '{"positive": "a grey cat", "negative": "dog"}'
    with tiny_qwen.load().use() as bundle:
        tokenizer, seen = bundle.processor.tokenizer, {}

        def scripted_generate(input_ids, **kwargs):
            seen.update(kwargs)
            new = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
            return torch.cat([input_ids, new.to(input_ids.device)], dim=1)

        monkeypatch.setattr(bundle.model, "generate", scripted_generate)
    image, mask = scene()
    result = write_prompts(image, mask, "replace the dog with a cat", tiny_qwen)  # an engine is a backend too
    assert (result.positive, result.negative, result.source) == ("a grey cat", "dog", "local:" + QWEN)
    assert seen["image_grid_thw"].shape[0] == 2  # the photo and the marked photo


def test_local_backend_by_model_name(monkeypatch):
    backend = LocalQwenBackend(QWEN)
    assert backend.source == f"local:{QWEN}" and backend.engine.model_choice == QWEN
    assert prompt_writer.as_backend(backend) is backend
