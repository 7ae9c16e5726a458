"""Shared pytest fixtures: tiny checkpoints, a real ComfyUI server, sample photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.comfy_harness import ComfyServer, comfyui_missing_reason


def tiny_models_root() -> Path:
    """Where the tiny checkpoints are cached between test sessions (rebuilt when a builder changes)."""
    return Path(os.environ.get("AGENTIC_EDIT_TINY_MODELS",
                               Path.home() / ".cache" / "agentic-edit" / "tiny-models"))


@pytest.fixture(scope="session")
def tiny_models_dir() -> Path:
    from tests.tiny_models import ensure_models

    root = tiny_models_root()
    ensure_models(root)
    return root


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, tiny_models_dir):
    """One real ComfyUI for the whole test session (skipped, with the reason, when none is installed)."""
    reason = comfyui_missing_reason()
    if reason:
        pytest.skip(reason)
    server = ComfyServer(tmp_path_factory.mktemp("comfy"), models_dir=tiny_models_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


@pytest.fixture(scope="session")
def photo_coffee() -> np.ndarray:
    """A real photo (scikit-image's 'coffee', 400x600 RGB uint8)."""
    return _skimage_photo("coffee")


@pytest.fixture(scope="session")
def photo_astronaut() -> np.ndarray:
    """A real photo (scikit-image's 'astronaut', 512x512 RGB uint8)."""
    return _skimage_photo("astronaut")


@pytest.fixture(scope="session")
def photo_chelsea() -> np.ndarray:
    """A real photo (scikit-image's 'chelsea' the cat, 300x451 RGB uint8)."""
    return _skimage_photo("chelsea")


@pytest.fixture(scope="module")
def inpaint_models_root(tiny_models_dir):
    """The store reads the tiny checkpoints for one test module; its inpainting models are freed after."""
    from agentic_edit.models import free

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tiny_models_dir
    free("sd15_inpaint")
    free("sdxl_inpaint")
