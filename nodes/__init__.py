"""Thin ComfyUI nodes: ComfyUI types in, an engine call, ComfyUI types out.

Only ``registry.py`` and the node modules import ComfyUI; ``convert.py`` is plain torch so that
engines and tests can use it without a ComfyUI checkout.
"""
