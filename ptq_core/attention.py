"""Replace `nn.MultiheadAttention` by an equivalent module built from `nn.Linear`s.

`nn.MultiheadAttention` hands its packed `in_proj_weight` and `out_proj.weight`
straight to a functional kernel, so swapping `out_proj` for a quantized layer
would be silently bypassed. `DecomposedAttention` computes the same function
with four ordinary linear layers (q, k, v, out), which the quantizer then sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DecomposedAttention", "can_decompose", "decompose_attention_"]


def can_decompose(mha: nn.MultiheadAttention) -> bool:
    """True for the common configuration (no bias_k/v, no zero-attn, same q/k/v width)."""
    return mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn


class DecomposedAttention(nn.Module):
    """Multi-head attention with separate q/k/v/out `nn.Linear` projections."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        d, bias = mha.embed_dim, mha.in_proj_bias is not None
        self.num_heads, self.batch_first, self.dropout = mha.num_heads, mha.batch_first, mha.dropout
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d, bias) for _ in range(3))
        self.out_proj = nn.Linear(d, d, mha.out_proj.bias is not None)
        with torch.no_grad():
            for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                proj.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
                if bias:
                    proj.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
            self.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                self.out_proj.bias.copy_(mha.out_proj.bias)
        self.to(mha.in_proj_weight.device)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D) -> (B, H, N, D/H)
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """Same call signature as `nn.MultiheadAttention`; attention weights are not returned."""
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        mask = _merge_masks(attn_mask, key_padding_mask, q.dtype)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal and mask is None)
        b, h, n, dh = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, h * dh))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _merge_masks(attn_mask: torch.Tensor | None, kpm: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean (True = masked) or additive masks, combined into one additive mask."""

    def additive(m: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(m, dtype=dtype).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)

    mask = additive(attn_mask) if attn_mask is not None else None
    if kpm is not None:
        kp = additive(kpm)[:, None, None, :]  # (B, 1, 1, S)
        mask = kp if mask is None else mask + kp
    return mask


def decompose_attention_(model: nn.Module) -> tuple[list[str], list[str]]:
    """Swap every decomposable `nn.MultiheadAttention` in place; returns (swapped, left as is)."""
    swapped, kept = [], []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MultiheadAttention):
            if not can_decompose(module):
                kept.append(name)
                continue
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, DecomposedAttention(module))
            swapped.append(name)
    return swapped, kept
