"""Layer dropping (depth) inside a plain ``transformers.Trainer``: train what is left.

The layers are dropped when the Trainer is built (``on_init_end``), before it creates the
optimizer or wraps the model for DDP, so the optimizer holds only the kept layers, distributed
training sees one consistent model, and every callback (a ``DistillationCallback`` with a hidden
layer map, a pruning callback) sees the smaller model from its first event. The kept layers keep
their weights; the config describes the smaller model, so every checkpoint and the final save
reload with a plain ``from_pretrained``. See :func:`loyalkit.compression.drop_layers`.

Example (``model``, ``teacher``, ``args``, ``train_set`` as for any Trainer run)::

    from transformers import Trainer
    from loyalkit.callbacks import DistillationCallback, LayerDroppingCallback

    dropping = LayerDroppingCallback(count=3, strategy="alternate")   # 6 layers -> 0, 2, 4
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      callbacks=[dropping, DistillationCallback(teacher)])
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from transformers import TrainerCallback

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.compression.layer_dropping import (
    LAYER_DROPPING_STRATEGIES,
    Strategy,
    drop_layers,
)

__all__ = ["LayerDroppingCallback", "LayerDroppingConfig"]


@dataclass(frozen=True)
class LayerDroppingConfig:
    """Which layers :class:`LayerDroppingCallback` keeps: ``keep`` (layer indices) or ``count``
    layers dropped by ``strategy`` (``"top"`` or ``"alternate"``, see
    :func:`loyalkit.compression.layers_to_keep`); exactly one of ``keep`` and ``count``. Checked
    against the model's depth when the layers are dropped."""

    keep: tuple[int, ...] | None = None
    count: int | None = None
    strategy: Strategy = "top"

    def __post_init__(self) -> None:
        if isinstance(self.keep, list):
            object.__setattr__(self, "keep", tuple(self.keep))
        keep, count = self.keep, self.count
        if (keep is None) == (count is None):
            raise ValueError(
                f"keep, count: pass exactly one of them, got keep={keep!r}, count={count!r}"
            )
        if keep is not None:
            ints = isinstance(keep, tuple) and all(
                not isinstance(i, bool) and isinstance(i, int) for i in keep
            )
            if not ints or not keep or min(keep) < 0 or len(set(keep)) != len(keep):
                raise ValueError(
                    f"keep: expected distinct layer indices >= 0 (at least one), got {keep!r}"
                )
        elif isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count: expected an int >= 1 (layers to drop), got {count!r}")
        if self.strategy not in LAYER_DROPPING_STRATEGIES:
            raise ValueError(
                f"strategy: expected one of {', '.join(LAYER_DROPPING_STRATEGIES)}, "
                f"got {self.strategy!r}"
            )

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        keep = None if self.keep is None else list(self.keep)
        return {"keep": keep, "count": self.count, "strategy": self.strategy}


class LayerDroppingCallback(TrainerCallback):
    """Drop layers when the Trainer is built and train the smaller model; the arguments are
    those of :class:`LayerDroppingConfig`."""

    unique: ClassVar[str | None] = "both would drop layers; name every layer to keep in one"

    def __init__(
        self,
        keep: Sequence[int] | None = None,
        *,
        count: int | None = None,
        strategy: Strategy = "top",
    ) -> None:
        kept = tuple(keep) if isinstance(keep, (list, tuple)) else keep
        self.config = LayerDroppingConfig(kept, count, strategy)  # type: ignore[arg-type]
        self._dropped: set[int] = set()  # ids of the models already made smaller

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        return (Change("layer_stack", "drops transformer layers before training"),)

    def _drop(self, model: Any) -> None:
        if id(model) not in self._dropped:
            config = self.config
            drop_layers(model, config.keep, count=config.count, strategy=config.strategy)
            self._dropped.add(id(model))

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if model is not None:
            self._drop(model)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        register_callback(self, state, model)
        if id(model) in self._dropped:
            return
        # Added after the Trainer was built: the optimizer may exist and DDP may wrap the model.
        if getattr(args, "world_size", 1) > 1:
            raise ValueError(
                "LayerDroppingCallback: pass it in Trainer(callbacks=[...]) so the layers are "
                "dropped before DDP wraps the model, not with add_callback afterwards"
            )
        self._drop(model)  # the kept layers' parameters are those the optimizer holds
