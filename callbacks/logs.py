"""Adding a callback's own values to the log the Trainer is reporting, in ``on_log``.

``Trainer.log`` first stores a shallow copy of ``logs`` (plus ``"step"``) in
``state.log_history``, then calls every callback's ``on_log`` with ``logs`` itself. Values added to
``logs`` reach the callbacks listed later (reporting integrations included); the stored copy needs
the same values, or ``log_history`` (and ``trainer_state.json``) would miss them.

Example:
    >>> from transformers import TrainerState
    >>> state = TrainerState(global_step=3)
    >>> logs = {"loss": 0.5}
    >>> state.log_history.append({**logs, "step": 3})  # what Trainer.log does first
    >>> add_to_log(logs, state, {"sparsity": 0.25})
    >>> logs, state.log_history[-1]
    ({'loss': 0.5, 'sparsity': 0.25}, {'loss': 0.5, 'step': 3, 'sparsity': 0.25})
"""

from __future__ import annotations

from collections.abc import Mapping

from transformers import TrainerState

__all__ = ["add_to_log"]


def add_to_log(logs: dict[str, float], state: TrainerState, values: Mapping[str, float]) -> None:
    """Add ``values`` to ``logs`` and to the copy of ``logs`` that ``Trainer.log`` stored.

    The last ``log_history`` entry is updated only when it is that copy: same step, and every value
    of ``logs`` present there as the very same object.
    """
    if state.log_history:
        entry = state.log_history[-1]
        if entry.get("step") == state.global_step and all(
            key in entry and entry[key] is value for key, value in logs.items()
        ):
            entry.update(values)
    logs.update(values)
