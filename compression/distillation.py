"""Knowledge distillation: logit KD (Hinton et al. 2015), pure-KL KD and hidden-state KD (PKD).

The losses are plain functions over tensors. :class:`Distiller` puts them on a student model with
forward hooks, so any training loop (the Hugging Face ``Trainer`` included, through
``loyalkit.callbacks.DistillationCallback``) optimises the distillation loss without being changed:
in training mode the hook runs the teacher on the same inputs and replaces ``outputs.loss``.

Loss per example ``i`` (``T`` the temperature, ``alpha`` the KD weight)::

    alpha * T**2 * KL(softmax(t_i / T) || softmax(s_i / T))
    + (1 - alpha) * CE(s_i, y_i)
    + hidden_weight * sum over (student layer, teacher layer) of MSE(h_s, h_t)

``alpha=1`` is pure-KL distillation: no hard labels are needed (Xu et al. 2021 use it as the upper
bound for probability loyalty).

Example:
    >>> import torch
    >>> student = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    >>> teacher = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    >>> round(float(logit_kd_loss(student, teacher, temperature=1.0)), 4)
    0.1262
    >>> round(float(distillation_loss(student, teacher, torch.tensor([0, 1]), alpha=0.5)), 4)
    0.1732
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "DistillationConfig",
    "Distiller",
    "TeacherLogitCache",
    "check_layer_map",
    "check_same_vocabulary",
    "distillation_loss",
    "hidden_state_loss",
    "logit_kd_loss",
    "teacher_inputs",
]


def _forward_parameters(model: nn.Module) -> set[str] | None:
    """The names ``model.forward`` declares; None for a wrapper that takes only ``**kwargs``.

    Names a transformers model would swallow through ``**kwargs`` are not declared, so they are
    left out; a forward without ``input_ids`` but with ``**kwargs`` passes its inputs on unseen.
    """
    parameters = inspect.signature(model.forward).parameters
    named = {
        name
        for name, parameter in parameters.items()
        if parameter.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return None if takes_kwargs and "input_ids" not in named else named


_CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _config_value(model: nn.Module | None, name: str) -> Any:
    return getattr(getattr(model, "config", None), name, None)


def check_same_vocabulary(teacher: nn.Module, student: nn.Module) -> None:
    """Refuse a teacher whose vocabulary size differs from the student's (``config.vocab_size``).

    The teacher reads the student's token ids: with another vocabulary they name other tokens (or
    none: an ``IndexError`` deep in the embedding). Models without ``config.vocab_size`` pass.
    """
    sizes = _config_value(teacher, "vocab_size"), _config_value(student, "vocab_size")
    if None not in sizes and sizes[0] != sizes[1]:
        raise ValueError(
            f"`teacher` ({type(teacher).__name__}) has a vocabulary of {sizes[0]} tokens but the "
            f"student ({type(student).__name__}) has {sizes[1]}: the teacher would read the "
            "student's token ids as other tokens; use a teacher and a student that share one "
            "tokenizer"
        )


def teacher_inputs(
    teacher: nn.Module, inputs: Mapping[str, Any], student: nn.Module | None = None
) -> dict[str, Any]:
    """The part of a student's batch that ``teacher``'s forward accepts and reads the same way.

    ``input_ids`` and ``attention_mask`` when the teacher's forward declares them;
    ``token_type_ids`` only for a teacher with segment embeddings (``config.type_vocab_size`` > 0:
    GPT-2 would embed them as tokens, DistilBERT has none), and an error if the ids exceed its
    segment vocabulary; ``position_ids`` only for a teacher of the student's own family (RoBERTa, for
    one, offsets its positions by the padding index). Labels and loss arguments are never passed.

    Example:
        >>> import torch
        >>> from transformers import DistilBertConfig, DistilBertForSequenceClassification
        >>> teacher = DistilBertForSequenceClassification(DistilBertConfig(
        ...     vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
        >>> batch = {"input_ids": torch.tensor([[2, 5]]), "token_type_ids": torch.tensor([[0, 0]]),
        ...          "labels": torch.tensor([1])}
        >>> sorted(teacher_inputs(teacher, batch))
        ['input_ids']
    """
    declared = _forward_parameters(teacher)
    accepted = set(_CANDIDATE_INPUTS) if declared is None else declared
    chosen: dict[str, Any] = {
        name: inputs[name]
        for name in ("input_ids", "attention_mask")
        if inputs.get(name) is not None and name in accepted
    }
    segments = inputs.get("token_type_ids")
    type_vocab = _config_value(teacher, "type_vocab_size")
    # A teacher without a transformers config (a wrapper) gets the segments as before.
    reads_segments = type_vocab > 0 if isinstance(type_vocab, int) else declared is None
    if segments is not None and "token_type_ids" in accepted and reads_segments:
        largest = int(segments.max()) if segments.numel() else 0
        if isinstance(type_vocab, int) and largest >= type_vocab:
            raise ValueError(
                f"`token_type_ids` go up to {largest} but the teacher ({type(teacher).__name__}) "
                f"has {type_vocab} segment embeddings (config.type_vocab_size)"
            )
        chosen["token_type_ids"] = segments
    positions = inputs.get("position_ids")
    same_family = student is None or _config_value(teacher, "model_type") == _config_value(
        student, "model_type"
    )
    if positions is not None and "position_ids" in accepted and same_family:
        chosen["position_ids"] = positions
    return chosen


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"`temperature` must be a number, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature}")
    return float(temperature)


def _check_weight(value: float, name: str, upper: float | None, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__}")
    low_ok = value > 0 if positive else value >= 0
    if not math.isfinite(value) or not low_ok or (upper is not None and value > upper):
        allowed = f"in [0, {upper}]" if upper is not None else "> 0" if positive else ">= 0"
        raise ValueError(f"`{name}` must be {allowed}, got {value}")
    return float(value)


def _check_flag(value: bool, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}")


def _check_logit_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(logits).__name__}")
        if logits.ndim != 2:
            raise ValueError(
                f"`{name}` must be 2-D (examples, classes), got shape {tuple(logits.shape)}"
            )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "`student_logits` and `teacher_logits` must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def _at_least_float32(values: torch.Tensor) -> torch.Tensor:
    # Half-precision log-softmax and MSE lose too much; float64 inputs keep their precision.
    return values if values.dtype == torch.float64 else values.float()


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    if reduction == "mean":
        return per_example.mean()
    raise ValueError(f"`reduction` must be 'mean', 'sum' or 'none', got {reduction!r}")


def logit_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``T**2 * KL(softmax(teacher / T) || softmax(student / T))`` per example, then reduced.

    The ``T**2`` factor keeps the gradient scale independent of ``T`` (Hinton et al. 2015).
    Computed in float32 (float64 inputs: float64) whatever the logits' dtype.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[1.0, 2.0, 3.0]])
        >>> float(logit_kd_loss(logits, logits, temperature=4.0))
        0.0
    """
    temperature = _check_temperature(temperature)
    _check_logit_pair(student_logits, teacher_logits)
    log_student = F.log_softmax(_at_least_float32(student_logits) / temperature, dim=-1)
    log_teacher = F.log_softmax(_at_least_float32(teacher_logits) / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(dim=-1)
    return _reduce(kl * temperature**2, reduction)


def _hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None:
        raise ValueError(
            "`labels` are needed when `alpha` < 1 (the hard-label cross-entropy has weight "
            "1 - alpha); pass labels, or alpha=1 for pure-KL distillation"
        )
    if labels.ndim != 1 or labels.shape[0] != student_logits.shape[0]:
        raise ValueError(
            f"`labels` must be 1-D with one class index per example ({student_logits.shape[0]}), "
            f"got shape {tuple(labels.shape)}"
        )
    # ignore_index -100 gives 0 for unlabelled rows, as transformers' own loss does.
    return F.cross_entropy(_at_least_float32(student_logits), labels.long(), reduction="none")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    alpha: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """``alpha * logit_kd_loss + (1 - alpha) * cross_entropy(student, labels)``.

    ``alpha=1`` is pure-KL distillation and needs no ``labels``. With ``reduction="mean"`` the
    hard-label term averages over labelled rows (labels of -100 are ignored) as
    ``torch.nn.functional.cross_entropy`` does.

    Example:
        >>> import torch
        >>> s, t = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
        >>> bool(distillation_loss(s, t, alpha=1.0) == logit_kd_loss(s, t))
        True
    """
    alpha = _check_weight(alpha, "alpha", 1.0)
    kd = logit_kd_loss(student_logits, teacher_logits, temperature=temperature, reduction="none")
    if alpha == 1.0:
        return _reduce(kd, reduction)
    ce = _hard_label_loss(student_logits, labels)
    if reduction == "mean":
        assert labels is not None  # _hard_label_loss raised otherwise
        labelled = (labels != -100).sum().clamp(min=1)
        return alpha * kd.mean() + (1.0 - alpha) * ce.sum() / labelled
    return _reduce(alpha * kd + (1.0 - alpha) * ce, reduction)


def hidden_state_loss(
    student_hidden_states: Sequence[torch.Tensor],
    teacher_hidden_states: Sequence[torch.Tensor],
    layer_map: Mapping[int, int],
    *,
    attention_mask: torch.Tensor | None = None,
    normalize: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Hidden-state MSE summed over the mapped layers (Patient KD, Sun et al. 2019).

    ``*_hidden_states`` are what transformers returns with ``output_hidden_states=True``: index 0
    is the embedding output, index ``k`` the output of layer ``k``. ``layer_map`` maps student
    layer -> teacher layer. Per example and layer the loss is the mean squared difference over the
    hidden dimension and the non-padding tokens (``attention_mask``). ``normalize=True`` first
    scales every token vector to unit L2 norm, as PKD does.

    Example:
        >>> import torch
        >>> h = [torch.ones(1, 3, 4), torch.zeros(1, 3, 4)]
        >>> float(hidden_state_loss(h, h, {1: 0}))
        1.0
    """
    if not isinstance(layer_map, Mapping) or not layer_map:
        raise ValueError(
            f"`layer_map` must be a non-empty mapping student layer -> teacher layer, got {layer_map!r}"
        )
    check_layer_map(layer_map, len(student_hidden_states) - 1, len(teacher_hidden_states) - 1)
    total: torch.Tensor | None = None
    for student_layer, teacher_layer in layer_map.items():
        student = _at_least_float32(student_hidden_states[student_layer])
        teacher = _at_least_float32(teacher_hidden_states[teacher_layer])
        if student.shape != teacher.shape:
            raise ValueError(
                f"`layer_map` pairs student layer {student_layer} {tuple(student.shape)} with "
                f"teacher layer {teacher_layer} {tuple(teacher.shape)}: hidden states must have the "
                "same shape (same hidden size; no projection is learned)"
            )
        if normalize:
            student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
        per_token = F.mse_loss(student, teacher, reduction="none").mean(dim=-1)
        if attention_mask is None:
            per_example = per_token.mean(dim=-1)
        else:
            mask = attention_mask.to(per_token.dtype)
            per_example = (per_token * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
        total = per_example if total is None else total + per_example
    assert total is not None
    return _reduce(total, reduction)


def check_layer_map(
    layer_map: Mapping[int, int], student_layers: int, teacher_layers: int
) -> dict[int, int]:
    """Check that ``layer_map`` (student layer -> teacher layer) names layers both models have.

    Layers are numbered as transformers' ``hidden_states``: 0 is the embedding output, 1..L the
    transformer layers. Returns the map as a plain dict.

    Example:
        >>> check_layer_map({1: 2, 2: 4}, student_layers=2, teacher_layers=4)
        {1: 2, 2: 4}
    """
    if not isinstance(layer_map, Mapping):
        raise TypeError(
            f"`layer_map` must be a mapping student layer -> teacher layer, got {type(layer_map).__name__}"
        )
    checked = {}
    for student_layer, teacher_layer in layer_map.items():
        for who, layer, count in (
            ("student", student_layer, student_layers),
            ("teacher", teacher_layer, teacher_layers),
        ):
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise TypeError(f"`layer_map` layers must be ints, got {layer!r} for the {who}")
            if not 0 <= layer <= count:
                raise ValueError(
                    f"`layer_map` names {who} layer {layer}, outside the range 0..{count} "
                    f"(0 is the embedding output, 1..{count} the {who}'s transformer layers)"
                )
        checked[student_layer] = teacher_layer
    return checked


class TeacherLogitCache:
    """Teacher logits computed once per example, keyed by the example's content.

    The key hashes each row's non-padding ``input_ids`` and ``token_type_ids``, so the same
    example gets the same key under any padding or batch order, and a changed input (data
    augmentation) simply misses: reuse is always correct, it only saves time when inputs repeat.
    Holds one logit row per distinct example.

    Example:
        >>> import torch
        >>> cache = TeacherLogitCache()
        >>> ids = torch.tensor([[2, 7, 3, 0], [2, 7, 3, 5]])
        >>> keys = cache.keys(ids, attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
        >>> cache.store(keys, torch.tensor([[0.5, -0.5], [1.0, 2.0]]))
        >>> cache.lookup(keys[::-1]).tolist(), len(cache)
        ([[1.0, 2.0], [0.5, -0.5]], 2)
    """

    def __init__(self) -> None:
        self._logits: dict[bytes, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._logits)

    def clear(self) -> None:
        self._logits.clear()

    @staticmethod
    def keys(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[bytes]:
        """One stable key per row: a hash of its non-padding token ids and token types."""
        ids = input_ids.detach().to("cpu", torch.int64)
        mask = None if attention_mask is None else attention_mask.detach().to("cpu").bool()
        types = None if token_type_ids is None else token_type_ids.detach().to("cpu", torch.int64)
        keys = []
        for row in range(ids.shape[0]):
            keep = slice(None) if mask is None else mask[row]
            digest = hashlib.blake2b(ids[row][keep].numpy().tobytes(), digest_size=16)
            if types is not None:
                digest.update(b"|" + types[row][keep].numpy().tobytes())
            keys.append(digest.digest())
        return keys

    def lookup(self, keys: Sequence[bytes]) -> torch.Tensor | None:
        """The stacked logits for ``keys``, or None unless every key is cached."""
        if not keys or any(key not in self._logits for key in keys):
            return None
        return torch.stack([self._logits[key] for key in keys])

    def store(self, keys: Sequence[bytes], logits: torch.Tensor) -> None:
        if len(keys) != logits.shape[0]:
            raise ValueError(f"got {len(keys)} `keys` for {logits.shape[0]} rows of `logits`")
        for key, row in zip(keys, logits.detach(), strict=True):
            self._logits[key] = row.clone()


@dataclass(frozen=True)
class DistillationConfig:
    """Hyper-parameters of :class:`Distiller`.

    ``alpha`` weighs the logit KD loss against the hard-label loss (``alpha=1``: pure-KL KD, no
    labels needed). ``hidden_layer_map`` (student layer -> teacher layer, 0 = embeddings) adds
    ``hidden_weight`` times the hidden-state MSE; ``hidden_normalize`` L2-normalises hidden states
    first (PKD). ``cache_teacher_logits`` reuses teacher logits per example; it cannot be combined
    with hidden-state KD, which needs the teacher's hidden states at every step.
    """

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_layer_map: Mapping[int, int] | None = None
    hidden_weight: float = 1.0
    hidden_normalize: bool = False
    cache_teacher_logits: bool = False
    _layer_map: dict[int, int] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        _check_temperature(self.temperature)
        _check_weight(self.alpha, "alpha", 1.0)
        # 0 would add the hidden-state loss times nothing: hidden KD switched off unannounced.
        _check_weight(self.hidden_weight, "hidden_weight", None, positive=True)
        _check_flag(self.hidden_normalize, "hidden_normalize")
        _check_flag(self.cache_teacher_logits, "cache_teacher_logits")
        if self.hidden_layer_map is not None:
            if not isinstance(self.hidden_layer_map, Mapping) or not self.hidden_layer_map:
                raise ValueError(
                    "`hidden_layer_map` must be a non-empty mapping student layer -> teacher layer "
                    f"or None, got {self.hidden_layer_map!r}"
                )
            if self.cache_teacher_logits:
                raise ValueError(
                    "`cache_teacher_logits=True` cannot be combined with `hidden_layer_map`: "
                    "hidden-state KD needs the teacher's hidden states at every step"
                )
            object.__setattr__(self, "_layer_map", dict(self.hidden_layer_map))


def _num_labels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_labels", None)


def _num_layers(model: nn.Module, who: str) -> int:
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(layers, int):
        raise TypeError(
            f"hidden-state KD needs a transformers model with `config.num_hidden_layers` as the {who}"
        )
    return layers


class Distiller:
    """Makes a student model's training-mode forward return the distillation loss.

    :meth:`attach` registers forward hooks on the student. In training mode each forward runs the
    frozen teacher (eval mode, no grad, moved to the student's device) on the same inputs and
    replaces ``outputs.loss``; in eval mode the student's own outputs are untouched. The teacher
    is held here, never registered inside the student, so it is never saved with it.

    Normalisation: when the forward call carries ``num_items_in_batch`` (transformers' loss-kwargs
    convention; the Trainer passes it to models whose ``forward`` takes ``**kwargs`` and then does
    not divide the loss by the gradient-accumulation steps), the loss is the sum over examples
    divided by ``num_items_in_batch``, as transformers' own losses do. Otherwise it is the batch
    mean and the caller averages over accumulation steps.

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
        ...                     num_attention_heads=2, intermediate_size=32,
        ...                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        >>> teacher = BertForSequenceClassification(config)
        >>> student = BertForSequenceClassification(config)
        >>> distiller = Distiller(teacher, DistillationConfig(alpha=1.0)).attach(student.train())
        >>> ids = torch.tensor([[2, 5, 7, 3]])
        >>> loss = student(input_ids=ids).loss
        >>> expected = logit_kd_loss(student(input_ids=ids).logits,
        ...                          teacher(input_ids=ids).logits, temperature=2.0)
        >>> bool(torch.allclose(loss, expected))
        True
        >>> distiller.detach()
    """

    def __init__(self, teacher: nn.Module, config: DistillationConfig | None = None) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"`teacher` must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self.config = config if config is not None else DistillationConfig()
        if not isinstance(self.config, DistillationConfig):
            raise TypeError(
                f"`config` must be a DistillationConfig, got {type(self.config).__name__}"
            )
        self.cache: TeacherLogitCache | None = (
            TeacherLogitCache() if self.config.cache_teacher_logits else None
        )
        self._handles: list[RemovableHandle] = []
        self._student: nn.Module | None = None
        self._signature: inspect.Signature | None = None
        self._drop_hidden_states = False

    def check_student(self, student: nn.Module) -> None:
        """Raise if the teacher cannot teach ``student``: label count, layer map, task type."""
        if student is self.teacher:
            raise ValueError("`teacher` and the student are the same module")
        check_same_vocabulary(self.teacher, student)
        student_labels, teacher_labels = _num_labels(student), _num_labels(self.teacher)
        if (
            student_labels is not None
            and teacher_labels is not None
            and student_labels != teacher_labels
        ):
            raise ValueError(
                f"`teacher` has {teacher_labels} labels but the student has {student_labels}: "
                "distillation needs the same label set"
            )
        problem = getattr(getattr(student, "config", None), "problem_type", None)
        if problem not in (None, "single_label_classification"):
            raise ValueError(
                f"distillation supports single-label classification, the student's "
                f"`config.problem_type` is {problem!r}"
            )
        if self.config._layer_map:
            from loyalkit.compression.module_replacement import ModuleReplacementLayers

            if any(isinstance(m, ModuleReplacementLayers) for m in student.modules()):
                raise ValueError(
                    "hidden-state distillation (DistillationCallback / Distiller with "
                    "`hidden_layer_map`) conflicts with module replacement "
                    "(ModuleReplacementCallback / prepare_module_replacement): in training each "
                    "block runs its predecessor or its successor at random, so a student layer "
                    "index names no fixed layer (transformers 5 even records every inner layer "
                    "that ran); use logit distillation (hidden_layer_map=None)"
                )
            check_layer_map(
                self.config._layer_map,
                _num_layers(student, "student"),
                _num_layers(self.teacher, "teacher"),
            )
            sizes = [
                getattr(getattr(m, "config", None), "hidden_size", None)
                for m in (student, self.teacher)
            ]
            if None not in sizes and sizes[0] != sizes[1]:
                raise ValueError(
                    f"`hidden_layer_map` needs equal hidden sizes, the student has {sizes[0]} and "
                    f"the teacher {sizes[1]}"
                )

    def attach(self, student: nn.Module) -> Distiller:
        """Hook into ``student``'s forward; the teacher goes to its device in eval mode."""
        self.check_student(student)
        other = getattr(student, "_loyalkit_distiller", None)
        if other is not None and other is not self:
            raise ValueError("the student already has a Distiller attached; detach it first")
        self.detach()
        parameter = next(student.parameters(), None)
        if parameter is not None:
            self.teacher.to(parameter.device)
        self.teacher.eval()
        self._signature = inspect.signature(student.forward)
        self._handles = [
            student.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            student.register_forward_hook(self._after_forward, with_kwargs=True),
        ]
        self._student = student
        student._loyalkit_distiller = self  # type: ignore[assignment]
        return self

    def detach(self) -> None:
        """Remove the hooks; the student's forward is its own again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if (
            self._student is not None
            and getattr(self._student, "_loyalkit_distiller", None) is self
        ):
            del self._student._loyalkit_distiller
        self._student = None

    def _before_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        self._drop_hidden_states = False
        if not module.training or not self.config._layer_map or kwargs.get("output_hidden_states"):
            return None
        # The student's hidden states are needed for the loss; the caller did not ask for them.
        self._drop_hidden_states = not getattr(
            getattr(module, "config", None), "output_hidden_states", False
        )
        return args, {**kwargs, "output_hidden_states": True}

    def _after_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any
    ) -> Any:
        if not module.training:
            return None
        if not hasattr(outputs, "logits") or not hasattr(outputs, "__dataclass_fields__"):
            raise TypeError(
                "distillation needs the student to return a transformers ModelOutput with "
                f"`logits` (return_dict=True), got {type(outputs).__name__}"
            )
        assert self._signature is not None
        inputs = self._signature.bind_partial(*args, **kwargs).arguments
        inputs = {**inputs.pop("kwargs", {}), **inputs}
        loss = self.loss(outputs, inputs)
        updates: dict[str, Any] = {"loss": loss}
        if self._drop_hidden_states:
            updates["hidden_states"] = None
        return replace(outputs, **updates)

    def teacher_outputs(
        self, inputs: Mapping[str, Any], device: torch.device
    ) -> tuple[torch.Tensor, Any]:
        """Teacher logits (from the cache when possible) and hidden states (or None)."""
        if inputs.get("input_ids") is None:
            raise ValueError(
                "distillation needs `input_ids` in the student's inputs to run the teacher"
            )
        keys = None
        if self.cache is not None:
            keys = self.cache.keys(
                inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids")
            )
            cached = self.cache.lookup(keys)
            if cached is not None:
                return cached.to(device), None
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        self.teacher.eval()
        selected = teacher_inputs(self.teacher, inputs, self._student)
        with torch.no_grad():
            result = self.teacher(
                **selected,
                output_hidden_states=bool(self.config._layer_map),
                return_dict=True,
            )
        if self.cache is not None and keys is not None:
            self.cache.store(keys, result.logits)
        return result.logits, result.hidden_states

    def loss(self, outputs: Any, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The distillation loss of the student's ``outputs`` on ``inputs`` (see the class doc)."""
        config = self.config
        student_logits = outputs.logits
        teacher_logits, teacher_hidden = self.teacher_outputs(inputs, student_logits.device)
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(
                f"`teacher` logits have shape {tuple(teacher_logits.shape)} but the student's have "
                f"{tuple(student_logits.shape)}: distillation needs the same label set"
            )
        per_example = distillation_loss(
            student_logits,
            teacher_logits,
            inputs.get("labels"),
            temperature=config.temperature,
            alpha=config.alpha,
            reduction="none",
        )
        if config._layer_map:
            per_example = per_example + config.hidden_weight * hidden_state_loss(
                outputs.hidden_states,
                teacher_hidden,
                config._layer_map,
                attention_mask=inputs.get("attention_mask"),
                normalize=config.hidden_normalize,
                reduction="none",
            )
        num_items = inputs.get("num_items_in_batch")
        if num_items is not None:
            return per_example.sum() / num_items
        labels = inputs.get("labels")
        if labels is not None:
            # The same denominator the Trainer counts for num_items_in_batch: labelled rows.
            return per_example.sum() / (labels != -100).sum().clamp(min=1)
        return per_example.mean()
