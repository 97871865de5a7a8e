"""Load the causal LMs ``loyalkit compare lm`` compares, and build a student from the teacher.

A model is named by a local folder (``save_pretrained`` output), a ``.gguf`` file that transformers
can read (needs the ``gguf`` package; the weights are dequantized to float32), or a Hugging Face Hub
id (downloaded by transformers as usual). A student may instead be the teacher plus one compression
from :mod:`loyalkit.compression` or torchao: int8 (dynamic activations, torchao's
``Int8DynamicActivationInt8WeightConfig`` through
:func:`~loyalkit.compression.quantize_dynamic_int8`), int4 weight-only (torchao
``IntxWeightOnlyConfig``, int4 per group of 32, CPU-friendly), or unstructured magnitude pruning of the
decoder blocks' Linear weights (:func:`~loyalkit.compression.magnitude_prune`, per tensor). The
output head is never compressed (it is often tied to the input embeddings).

Example:
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    ...                      num_hidden_layers=1, num_attention_heads=4)
    >>> teacher = LlamaForCausalLM(config).eval()
    >>> student, description = student_from_teacher(teacher, StudentCompression(prune=0.5))
    >>> description
    '50% magnitude pruning of 7 decoder Linear weights (sparsity 0.5000)'
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "QUANTIZATIONS",
    "StudentCompression",
    "load_causal_lm",
    "load_tokenizer",
    "student_from_teacher",
]

Quantization = Literal["int8", "int4-weight-only"]
QUANTIZATIONS: tuple[str, ...] = ("int8", "int4-weight-only")


def _source(name: str) -> tuple[str, dict[str, Any]]:
    """``(path or Hub id, extra from_pretrained kwargs)`` for a folder, a GGUF file or a Hub id."""
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {name!r} does not exist")
        return str(path.parent), {"gguf_file": path.name}
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{name!r} is a file but not a .gguf file: pass a model folder (save_pretrained "
            "output), a .gguf file or a Hugging Face Hub id"
        )
    return (str(path) if path.is_dir() else name), {}


def load_causal_lm(name: str) -> nn.Module:
    """``AutoModelForCausalLM`` from a folder, a ``.gguf`` file or a Hub id, in eval mode, float32."""
    from transformers import AutoModelForCausalLM

    source, kwargs = _source(name)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    return model.eval()


def load_tokenizer(name: str) -> Any:
    """The tokenizer stored with a model folder, a ``.gguf`` file or a Hub id."""
    from transformers import AutoTokenizer

    source, kwargs = _source(name)
    return AutoTokenizer.from_pretrained(source, **kwargs)


@dataclass(frozen=True)
class StudentCompression:
    """What is done to a copy of the teacher to make the student (validated here, once).

    Args:
        quantize: ``"int8"`` or ``"int4-weight-only"``, or ``None``.
        prune: share of the decoder blocks' Linear weights to zero by magnitude, in (0, 1), or None.
    """

    quantize: Quantization | None = None
    prune: float | None = None

    def __post_init__(self) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ValueError(
                f"`quantize` must be one of {QUANTIZATIONS} or None, got {self.quantize!r}"
            )
        if self.prune is not None:
            if isinstance(self.prune, bool) or not isinstance(self.prune, (int, float)):
                raise TypeError(f"`prune` must be a number in (0, 1) or None, got {self.prune!r}")
            if not (math.isfinite(self.prune) and 0 < self.prune < 1):
                raise ValueError(
                    f"`prune` must be a share of weights in (0, 1), got {self.prune!r}"
                )
        if self.quantize is None and self.prune is None:
            raise ValueError("a StudentCompression needs `quantize` or `prune` (or both)")


def _output_head(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return head if isinstance(head, nn.Module) else None


def _block_linear_pattern(model: nn.Module) -> str:
    """A ``module_pattern`` naming every ``nn.Linear`` except the output head."""
    head = _output_head(model)
    names = [
        re.escape(name)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head
    ]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer besides its output head to compress "
            "(GPT-2 style Conv1D layers are not supported)"
        )
    return "|".join(names)


def _int4_weight_only(model: nn.Module, pattern: str) -> int:
    from torchao.quantization import IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    compiled = re.compile(pattern)
    count = 0

    def selected(module: nn.Module, name: str) -> bool:
        nonlocal count
        chosen = isinstance(module, nn.Linear) and compiled.fullmatch(name) is not None
        count += chosen
        return chosen

    int4 = torch.int4  # type: ignore[attr-defined]  # absent from torch's type stubs
    config = IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(32))
    quantize_(model, config, filter_fn=selected)
    return count


def student_from_teacher(
    teacher: nn.Module, compression: StudentCompression
) -> tuple[nn.Module, str]:
    """A compressed deep copy of ``teacher`` and a one-line description of what was done.

    Pruning comes first (on float weights), then quantization. The teacher is left unchanged.
    """
    from loyalkit.compression import magnitude_prune, quantize_dynamic_int8, sparsity

    if not isinstance(compression, StudentCompression):
        raise TypeError(
            f"`compression` must be a StudentCompression, got {type(compression).__name__}"
        )
    student = copy.deepcopy(teacher).eval()
    pattern = _block_linear_pattern(student)
    steps = []
    if compression.prune is not None:
        masks = magnitude_prune(student, compression.prune, module_pattern=pattern)
        steps.append(
            f"{compression.prune:.0%} magnitude pruning of {len(masks.masks)} decoder Linear "
            f"weights (sparsity {sparsity(student, pattern):.4f})"
        )
    if compression.quantize == "int8":
        done = quantize_dynamic_int8(
            _WithoutHead(student, _output_head(student)), backend="torchao"
        )
        steps.append(
            f"int8 dynamic quantization (torchao) of {done.quantized_layers} Linear layers"
        )
    elif compression.quantize == "int4-weight-only":
        count = _int4_weight_only(student, pattern)
        if count == 0:
            raise ValueError("int4 weight-only quantization found no Linear layer to quantize")
        steps.append(f"int4 weight-only quantization (torchao, group 32) of {count} Linear layers")
    return student, "; ".join(steps)


class _WithoutHead(nn.Module):
    """A view of ``model``'s modules without its output head, for functions that take every Linear."""

    def __init__(self, model: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.parts = nn.ModuleList(
            child for child in model.children() if head is None or child is not head
        )
