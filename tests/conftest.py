"""Test-session setup: the pack is importable as ``agentic_edit``; model hubs are off."""

import os

# No test may reach a model hub: tiny checkpoints are built locally (tests/tiny_models).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Every model in the suite is tiny: one thread per process beats threads contending for 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.pack import import_pack  # noqa: E402

import_pack()

pytest_plugins = ["tests.fixtures", "tests.openai_stub"]
