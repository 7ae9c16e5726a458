"""Helpers for the session tests in a real ComfyUI: one Agent Edit turn as a prompt, the session as
the routes show it, and its images as the routes name them.

The tiny grounding models decide what is found: "VisionReasoner-7B" finds the middle half of any
image, "Qwen2.5-VL-7B-Instruct" finds nothing.
"""

from __future__ import annotations

import io
import json
import urllib.parse

import numpy as np
from PIL import Image

FINDS_THE_MIDDLE = "VisionReasoner-7B"
FINDS_NOTHING = "Qwen2.5-VL-7B-Instruct"


def picture(name: str = "chelsea", size=(120, 80)) -> np.ndarray:
    """A small real photo (scikit-image), uint8 [H, W, 3]: small keeps every step fast."""
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB").resize(size, Image.BILINEAR))


def turn_prompt(image_name: str, instruction: str, session_id, *, grounding_model: str = FINDS_THE_MIDDLE,
                planner: str = "offline", base_url: str = "https://api.openai.com/v1") -> dict:
    """LoadImage -> Agent Edit (one session turn) -> SaveImage. ``session_id`` may be a link."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "AgenticEditAgentPlanner", "inputs": {
            "image": ["1", 0], "instruction": instruction, "planner": planner, "base_url": base_url,
            "model": "planner-model", "temperature": 0.0, "local_model": FINDS_NOTHING,
            "grounding_model": grounding_model, "sam_model": "sam2.1-hiera-large", "session_id": session_id}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "session_turn"}},
    }


def saved(server, result, prefix: str = "session_turn") -> list[np.ndarray]:
    """The images a prompt's SaveImage wrote (uint8: SaveImage truncates where the store rounds)."""
    refs = [r for r in result.images() if r["filename"].startswith(prefix)]
    return [np.asarray(Image.open(server.output_path(r)).convert("RGB")).astype(int) for r in refs]


def say(server, image_name: str, session_id: str, instruction: str, **options) -> np.ndarray:
    result = server.run(turn_prompt(image_name, instruction, session_id, **options))
    assert result.history["status"]["status_str"] == "success"
    [image] = saved(server, result)
    return image


def detail(server, session_id: str) -> dict:
    return server.get_json(f"/agentic_edit/sessions/{urllib.parse.quote(session_id)}")


def view(server, file_ref: dict) -> np.ndarray:
    """A session file through the ``url`` the routes give (ComfyUI's /view), as int [H, W(, 3)]."""
    assert file_ref["url"].startswith("/view?")
    status, body = server.request("GET", file_ref["url"])
    assert status == 200, (file_ref, status)
    return np.asarray(Image.open(io.BytesIO(body))).astype(int)


def head(server, session_id: str) -> np.ndarray:
    return view(server, detail(server, session_id)["head"]["file"])


def turn_image(session: dict, number: int, server) -> np.ndarray:
    return view(server, session["turns"][number]["result"]["file"])


def region_mask(server, session: dict, number: int, name: str) -> np.ndarray:
    [region] = [r for r in session["turns"][number]["regions"] if r["name"] == name]
    return view(server, region["file"]) > 0


def post(server, session_id: str, action: str, payload=None) -> tuple[int, dict]:
    path = f"/agentic_edit/sessions/{urllib.parse.quote(session_id)}/{action}"
    if isinstance(payload, (bytes, str)):
        status, body = server.request("POST", path, payload.encode() if isinstance(payload, str) else payload,
                                      {"Content-Type": "application/json"})
        return status, json.loads(body)
    return server.post_json(path, payload if payload is not None else {})


def dominant(pixels: np.ndarray, margin: float = 50) -> str | None:
    """The channel ("r", "g" or "b") whose mean over ``pixels`` ([N, 3]) is above both others by
    ``margin`` levels: a recoloured region; None for a natural one (the tabby cat is only reddish)."""
    mean = pixels.reshape(-1, 3).mean(axis=0)
    top = int(np.argmax(mean))
    return "rgb"[top] if all(mean[top] - mean[i] > margin for i in range(3) if i != top) else None
