"""The command's local ComfyUI is started with --cpu on a machine without an accelerator (ComfyUI
asks torch for a CUDA device at start and dies without one), and never twice."""

from __future__ import annotations

import pytest

from agentic_edit.agent import local_server
from tests.comfy_harness import find_comfyui


@pytest.fixture
def server(tmp_path):
    if find_comfyui() is None:
        pytest.skip("no ComfyUI checkout (set COMFYUI_PATH)")
    s = local_server.LocalComfyUI(extra_args=())
    s.folder = tmp_path
    return s


def test_cpu_flag_added_without_an_accelerator(server, monkeypatch):
    monkeypatch.setattr(local_server, "_has_accelerator", lambda: False)
    assert server.command().count("--cpu") == 1


def test_no_cpu_flag_with_an_accelerator(server, monkeypatch):
    monkeypatch.setattr(local_server, "_has_accelerator", lambda: True)
    assert "--cpu" not in server.command()


def test_users_own_cpu_flag_is_not_doubled(tmp_path, monkeypatch):
    if find_comfyui() is None:
        pytest.skip("no ComfyUI checkout (set COMFYUI_PATH)")
    monkeypatch.setattr(local_server, "_has_accelerator", lambda: False)
    s = local_server.LocalComfyUI(extra_args=("--cpu",))
    s.folder = tmp_path
    assert s.command().count("--cpu") == 1
