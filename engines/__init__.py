"""Engines: one module per engine around the real library. No ComfyUI import anywhere here;
plain numpy / PIL / torch in and out, so every engine is tested on its own."""
