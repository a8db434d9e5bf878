"""Sentence embeddings as sentence-transformers makes them for MiniLM: mean over real tokens, unit length."""

from __future__ import annotations

from typing import Any


def mean_pool_normalized(hidden: Any, attention_mask: Any) -> Any:
    """torch tensors in, torch tensor out; padding tokens do not count."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
