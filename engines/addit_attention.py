"""Add-it's weighted extended attention as attention processors for diffusers' FLUX blocks.

The transformer runs a batch of two streams: item 0 is the *source* (the input image, its prompt),
item 1 the *target* (the same scene with the new object). While the extension is on for a block,
the target's queries (its text and image tokens) attend to

    [source image tokens ; target text tokens ; target image tokens]

with the target's own keys multiplied by ``gamma`` (the source keys are not scaled): ``gamma`` > 1
makes the target trust its own prompt (the new object) more, ``gamma`` = 1 lets it copy more of the
source. The source stream attends to itself only, as in a plain FLUX step, so its result never
depends on the target. With the extension off, a block computes exactly what diffusers'
``FluxAttnProcessor`` computes.

One ``AdditState`` object is shared by all processors: the engine sets the step's switches on it
(which block kinds extend, ``gamma``, whether to record the subject's attention or the attention
mass for the automatic ``gamma``), and the processors record into it. Recording costs a few small
matrix products over the text tokens or over a sample of query rows, never a full attention matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

DOUBLE = "double"
SINGLE = "single"
# Rows of target image queries used to measure the attention mass for the automatic gamma.
MASS_SAMPLE_ROWS = 256


@dataclass
class AdditState:
    """Switches for the current transformer call and what the processors recorded during it."""

    text_len: int = 0                       # text tokens in front of the image tokens
    extend: set = field(default_factory=set)  # block kinds (DOUBLE / SINGLE) that extend this call
    gamma: float = 1.0
    subject_tokens: list[int] = field(default_factory=list)  # target text positions of the subject word
    record_subject: bool = False
    record_mass: bool = False
    subject_map: torch.Tensor | None = None  # [image tokens] sum over recorded layers
    subject_layers: int = 0
    mass_target: float = 0.0                # summed attention mass on target image keys (sampled rows)
    mass_source: float = 0.0

    def reset_records(self) -> None:
        self.subject_map, self.subject_layers = None, 0
        self.mass_target = self.mass_source = 0.0

    @property
    def mass_ratio(self) -> float:
        """Attention mass of the target's image queries on the target's image tokens / on the source's."""
        return self.mass_target / max(self.mass_source, 1e-12)


def _rotate(x: torch.Tensor, rotary) -> torch.Tensor:
    """FLUX's rotary embedding on [B, S, H, D] (diffusers' own function, so the numbers match its processor)."""
    from diffusers.models.embeddings import apply_rotary_emb

    return apply_rotary_emb(x, rotary, sequence_dim=1)


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SDPA on [B, S, H, D] tensors, result [B, S, H, D]."""
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return out.transpose(1, 2)


class AdditAttnProcessor:
    """Processor for one FLUX attention module (``kind``: a double- or a single-stream block)."""

    def __init__(self, state: AdditState, kind: str):
        self.state = state
        self.kind = kind

    def _projections(self, attn, hidden_states, encoder_hidden_states):
        def heads(x):
            return x.unflatten(-1, (-1, attn.head_dim))

        query = attn.norm_q(heads(attn.to_q(hidden_states)))
        key = attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))
        if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
            query = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states))), query], dim=1)
            key = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states))), key], dim=1)
            value = torch.cat([heads(attn.add_v_proj(encoder_hidden_states)), value], dim=1)
        return query, key, value

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        if attention_mask is not None:
            raise ValueError("Add-it attention does not take an attention mask")
        state = self.state
        query, key, value = self._projections(attn, hidden_states, encoder_hidden_states)
        if image_rotary_emb is not None:
            query, key = _rotate(query, image_rotary_emb), _rotate(key, image_rotary_emb)
        text = state.text_len
        two_streams = query.shape[0] == 2
        if two_streams and self.kind in state.extend:
            source = _attend(query[:1], key[:1], value[:1])
            ext_key = torch.cat([key[:1, text:], key[1:] * state.gamma], dim=1)
            ext_value = torch.cat([value[:1, text:], value[1:]], dim=1)
            target = _attend(query[1:], ext_key, ext_value)
            out = torch.cat([source, target])
        else:
            out = _attend(query, key, value)
        if state.record_subject and state.subject_tokens:
            self._record_subject(query[-1, text:], key[-1, :text], attn.head_dim)
        if state.record_mass and two_streams and self.kind in state.extend:
            self._record_mass(query[1, text:], key[0, text:], key[1], attn.head_dim)
        out = out.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        context, image = out[:, :text], out[:, text:]
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(context.contiguous())

    def _record_subject(self, image_q: torch.Tensor, text_k: torch.Tensor, head_dim: int) -> None:
        """Image -> text attention of the target (softmax over the text tokens), on the subject's tokens,
        averaged over heads; summed over the layers of the call."""
        logits = torch.einsum("nhd,thd->hnt", image_q.float(), text_k.float()) / head_dim ** 0.5
        probs = logits.softmax(dim=-1)[..., self.state.subject_tokens].sum(-1).mean(0)
        state = self.state
        state.subject_map = probs if state.subject_map is None else state.subject_map + probs
        state.subject_layers += 1

    def _record_mass(self, image_q: torch.Tensor, source_k: torch.Tensor, target_k: torch.Tensor,
                     head_dim: int) -> None:
        """How much of the target image queries' attention goes to target vs source image keys (sampled rows)."""
        stride = max(1, image_q.shape[0] // MASS_SAMPLE_ROWS)
        q = image_q[::stride].float()
        scale = head_dim ** -0.5
        to_source = torch.einsum("nhd,khd->hnk", q, source_k.float()) * scale
        to_target = torch.einsum("nhd,khd->hnk", q, target_k.float()) * (scale * self.state.gamma)
        probs = torch.cat([to_source, to_target], dim=-1).softmax(dim=-1)
        # Image to image: the target's own image tokens vs the source's (the text keys stay in the softmax).
        sources = source_k.shape[0]
        self.state.mass_source += float(probs[..., :sources].sum())
        self.state.mass_target += float(probs[..., sources + self.state.text_len:].sum())


def install(transformer, state: AdditState) -> None:
    """Give every attention module of ``transformer`` an Add-it processor sharing ``state``."""
    for block in transformer.transformer_blocks:
        block.attn.set_processor(AdditAttnProcessor(state, DOUBLE))
    for block in transformer.single_transformer_blocks:
        block.attn.set_processor(AdditAttnProcessor(state, SINGLE))


def uninstall(transformer) -> None:
    """Back to diffusers' own processors."""
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        block.attn.set_processor(FluxAttnProcessor())


def solve_gamma(measure, low: float = 1.0, high: float = 1.2, target_ratio: float = 1.05,
                tolerance: float = 0.005, max_evaluations: int = 8) -> tuple[float, list[tuple[float, float]]]:
    """The ``gamma`` in [low, high] at which ``measure(gamma)`` (the target/source mass ratio, which
    grows with gamma) equals ``target_ratio``: clamped to a bound when the ratio never reaches it, else
    Brent's method (scipy) or bisection. Returns (gamma, [(gamma, ratio) evaluated])."""
    tried: list[tuple[float, float]] = []
    known: dict[float, float] = {}  # brentq evaluates the bounds again: each gamma is one model pass, once

    def f(gamma: float) -> float:
        if gamma not in known:
            known[gamma] = float(measure(gamma))
            tried.append((gamma, known[gamma]))
        return known[gamma] - target_ratio

    f_low = f(low)
    if f_low >= 0:
        return low, tried
    f_high = f(high)
    if f_high <= 0:
        return high, tried
    try:
        from scipy.optimize import brentq

        gamma = brentq(f, low, high, xtol=tolerance, maxiter=max_evaluations)
        return float(gamma), tried
    except (ImportError, RuntimeError):
        a, b = low, high
        for _ in range(max_evaluations):
            mid = (a + b) / 2
            if f(mid) < 0:
                a = mid
            else:
                b = mid
            if b - a < tolerance:
                break
        return (a + b) / 2, tried
