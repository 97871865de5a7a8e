"""How much each feed-forward (intermediate) neuron matters: gradient importance and magnitude.

Both return a float64 ``(layers, neurons)`` tensor for
:func:`loyalkit.compression.select_ffn_neurons` / :func:`loyalkit.compression.prune_ffn`.

Gradient importance is the estimate Michel et al. (2019) use for heads, applied to neurons as
DynaBERT does (Hou et al., NeurIPS 2020, section 3.1): a gate ``xi_j`` multiplies neuron ``j``'s
activation where it enters the output projection, and ``I_j = E_x |dL(x) / d xi_j|`` at ``xi =
1``. Since ``dL/d xi_j = sum_i W_out[i, j] * dL/dW_out[i, j]`` for one example, this is the
first-order Taylor estimate of the loss change when the neuron's output weights are zeroed,
``|sum (w * dL/dw)|`` over the neuron's column, taken per example (not over the batch, where
signs of different examples would cancel) and averaged. It reuses the gates of
:mod:`loyalkit.compression.head_importance` with units one neuron wide.

Magnitude importance is the L2 norm of all the neuron's weights: its rows of the input
projections (gate and up for gated families) and its column of the output projection, biases left
out; the same choice :func:`~loyalkit.compression.magnitude_head_importance` makes for heads.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from loyalkit.compression import gradient_ffn_importance, magnitude_ffn_importance
    >>> _ = torch.manual_seed(0)
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=32)).eval()
    >>> batch = {"input_ids": torch.randint(5, 50, (3, 7)), "labels": torch.tensor([0, 1, 1])}
    >>> gradient_ffn_importance(model, [batch]).shape, magnitude_ffn_importance(model).shape
    (torch.Size([2, 32]), torch.Size([2, 32]))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from loyalkit.compression.ffn_pruning import ffn_parts
from loyalkit.compression.head_importance import gate_importance, unit_norms

__all__ = ["gradient_ffn_importance", "magnitude_ffn_importance"]


def gradient_ffn_importance(model: nn.Module, batches: Iterable[Mapping[str, Any]]) -> torch.Tensor:
    """``E_x |dL(x)/d xi_j|`` of every intermediate neuron, over ``batches`` (with ``labels``).

    ``model(**batch).loss`` must be the mean of the examples' losses, as for sequence
    classification. Runs in eval mode and leaves parameter gradients untouched.
    """
    gated = [(parts.output.module, 1) for parts in ffn_parts(model)]
    scores = gate_importance(model, batches, gated)
    return torch.stack([s.detach().double().cpu() for s in scores])


@torch.no_grad()
def magnitude_ffn_importance(model: nn.Module) -> torch.Tensor:
    """The L2 norm of each neuron's input rows and output column (biases left out)."""
    return torch.stack(
        [unit_norms((*parts.inputs, parts.output), parts.neurons) for parts in ffn_parts(model)]
    )
