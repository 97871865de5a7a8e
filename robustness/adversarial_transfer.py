"""Adversarial loyalty: do a source model's adversarial examples fool a target model the same way?

The successful adversarial examples of an :class:`~loyalkit.robustness.attack_runner.AttackReport`
(crafted against the *source*, e.g. the teacher) are fed to a *target* (e.g. the compressed
student). Loyal compression keeps the source's labels even where the source breaks; a student that
does not has changed *where* the model breaks (its robustness numbers then say little about the
teacher's weak spots). The reverse direction is the same call with the roles swapped: the
student's report fed to the teacher.

Returned values (labels compared with :func:`loyalkit.metrics.label_loyalty`; NaN when the report
has no successful attack):

- ``num_adversarial``: the report's successful adversarial examples;
- ``adversarial_label_loyalty``: share of them on which the target predicts the source's
  (wrong) adversarial label;
- ``original_label_loyalty``: the same agreement on their original texts, the baseline;
- ``transfer_rate``: share on which the target's prediction differs from the gold label (the
  attack transfers to the target).

Example:
    >>> from loyalkit.robustness.adversarial_transfer import adversarial_loyalty
    >>> # report = attack_model(teacher, tokenizer, dev_set, AttackConfig(recipe="deepwordbug"))
    >>> # adversarial_loyalty(report, student, tokenizer)["adversarial_label_loyalty"]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from loyalkit.metrics import label_loyalty
from loyalkit.robustness.attack_runner import AttackReport
from loyalkit.robustness.model_wrapper import predict_logits

__all__ = ["ADVERSARIAL_LOYALTY_KEYS", "adversarial_loyalty"]

ADVERSARIAL_LOYALTY_KEYS: tuple[str, ...] = (
    "num_adversarial",
    "adversarial_label_loyalty",
    "original_label_loyalty",
    "transfer_rate",
)


def adversarial_loyalty(
    report: AttackReport, target_model: nn.Module, tokenizer: Any, batch_size: int = 32
) -> dict[str, float]:
    """Feed ``report``'s successful adversarial examples to ``target_model`` (module docstring).

    Args:
        report: an attack on the source model (from ``attack_model``).
        target_model: the model to test (its mode is kept; it runs in eval mode).
        tokenizer: the target's tokenizer.
        batch_size: the most inputs per forward pass.
    """
    if not isinstance(report, AttackReport):
        raise TypeError(f"`report` must be an AttackReport, got {type(report).__name__}")
    if not isinstance(target_model, nn.Module):
        raise TypeError(
            f"`target_model` must be a torch.nn.Module, got {type(target_model).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    succeeded = [e for e in report.examples if e["status"] == "succeeded"]
    if not succeeded:
        nan = float("nan")
        return {
            "num_adversarial": 0.0,
            "adversarial_label_loyalty": nan,
            "original_label_loyalty": nan,
            "transfer_rate": nan,
        }
    columns = len(report.text_columns)
    adversarial = [_inputs(e["perturbed_text"], columns) for e in succeeded]
    original = [_inputs(e["original_text"], columns) for e in succeeded]
    on_adversarial = predict_logits(target_model, tokenizer, adversarial, batch_size).argmax(1)
    on_original = predict_logits(target_model, tokenizer, original, batch_size).argmax(1)
    source_adversarial = np.array([e["perturbed_label"] for e in succeeded])
    source_original = np.array([e["original_label"] for e in succeeded])
    gold = np.array([e["ground_truth"] for e in succeeded])
    return {
        "num_adversarial": float(len(succeeded)),
        "adversarial_label_loyalty": label_loyalty(on_adversarial.numpy(), source_adversarial),
        "original_label_loyalty": label_loyalty(on_original.numpy(), source_original),
        "transfer_rate": float(np.mean(on_adversarial.numpy() != gold)),
    }


def _inputs(text: str, columns: int) -> Any:
    """A report's text back as the tokenizer input: a string, or a tuple for sentence pairs."""
    if columns == 1:
        return text
    parts = tuple(text.split("\n"))
    if len(parts) != columns:
        raise ValueError(
            f"a report example joins {len(parts)} texts but the report has {columns} text columns"
        )
    return parts
