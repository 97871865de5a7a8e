"""Tiny local causal LMs for tests: a Llama teacher and students that differ from it a little."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax
from tiny_architectures import DECODER
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = 120


def tiny_llama(seed: int = 0, vocab_size: int = VOCAB) -> LlamaForCausalLM:
    """A 2-layer, hidden-32 Llama with random weights (eval mode)."""
    torch.manual_seed(seed)
    # The classifiers' tiny decoder (2 KV heads), as a plain LM: no pad token (it would zero an
    # embedding row), the cache on, untied head, room for 128 positions.
    config = LlamaConfig(
        **{
            **DECODER,
            "vocab_size": vocab_size,
            "num_hidden_layers": 2,
            "max_position_embeddings": 128,
            "pad_token_id": None,
            "use_cache": True,
            "tie_word_embeddings": False,
        }
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


def byte_level_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (covers any text: 256 byte symbols)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=128,
    )


TEXTS = [
    "The cat sat on the mat. The dog sat on the log.",
    "Plants need water and light to grow; animals need food.",
    "Which tool measures temperature? A thermometer measures temperature.",
    "The sun rises in the east and sets in the west.",
]


def save_tiny_lm_pair(folder: Path, texts: list[str] = TEXTS) -> tuple[Path, Path]:
    """A tiny Llama teacher and a perturbed student sharing a BPE tokenizer, saved as folders."""
    tokenizer = byte_level_tokenizer(texts)
    teacher = tiny_llama(vocab_size=len(tokenizer))
    student = perturbed(teacher)
    paths = folder / "teacher", folder / "student"
    for model, path in zip((teacher, student), paths, strict=True):
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return paths


def scipy_token_report(t: np.ndarray, s: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The token-level report computed independently with scipy from the teacher's (``t``) and the
    student's (``s``) float64 logits at the scored positions and the reference next tokens."""
    p, q = softmax(t, axis=1), softmax(s, axis=1)
    rows = np.arange(len(targets))
    kl = rel_entr(p, q).sum(axis=1)
    return {
        "label_loyalty": float((t.argmax(1) == s.argmax(1)).mean()),
        "probability_loyalty": float((1 - jensenshannon(p, q, axis=1)).mean()),
        "kl_divergence": float(kl.mean()),
        "kl_divergence_p99": float(np.percentile(kl, 99)),
        "delta_p_rms": math.sqrt(((q[rows, targets] - p[rows, targets]) ** 2).mean()),
        "ppl_ratio": math.exp(
            log_softmax(t, axis=1)[rows, targets].mean()
            - log_softmax(s, axis=1)[rows, targets].mean()
        ),
    }
