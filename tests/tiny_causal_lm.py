"""Tiny local causal LMs for tests: a Llama teacher and students that differ from it a little."""

from __future__ import annotations

import copy

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 120


def tiny_llama(seed: int = 0, vocab_size: int = VOCAB) -> LlamaForCausalLM:
    """A 2-layer, hidden-32 Llama with random weights (eval mode)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    # Random init gives nearly uniform next-token distributions; larger head weights make them
    # peaked, as a trained LM's are, so that argmax and KL say something.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model


def perturbed(model: LlamaForCausalLM, scale: float = 0.1, seed: int = 1) -> LlamaForCausalLM:
    """A copy of ``model`` with Gaussian noise of ``scale`` times each weight tensor's std added."""
    student = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in student.parameters():
            noise = torch.randn(parameter.shape, generator=generator) * scale
            noise *= float(parameter.std()) if parameter.numel() > 1 else 1.0
            parameter.add_(noise)
    return student.eval()


def token_stream(length: int, seed: int = 2, vocab_size: int = VOCAB) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (length,), generator=generator)
