"""A tiny real transformers model for the model-store tests (tests/test_model_store.py).

Not part of the workflow checkpoints (this module has no ``MODELS``): the store tests write it into
their own temporary models folder, in the real ``save_pretrained`` layout (config.json +
model.safetensors), so the store resolves and loads it exactly as it would a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path

TINY_BERT_FILES = ("config.json", "model.safetensors")


def build_tiny_bert(path: Path) -> Path:
    """A 2-layer, 16-wide BertModel with fixed random weights, saved at ``path``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(path, safe_serialization=True)
    return Path(path)
