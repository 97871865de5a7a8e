"""Progressive module replacement (BERT-of-Theseus, Xu et al. 2020) for transformer classifiers.

Any family with one module per layer (BERT-layout encoders, DistilBERT, DeBERTa-v2/v3, ModernBERT,
GPT-2, Llama, Qwen2, ...; found by :func:`loyalkit.compression.architectures.layer_stack`); ALBERT,
whose layers share one set of weights, is refused. The predecessor's encoder (N layers) is cut into M blocks of N/M consecutive layers; each block gets a
successor module with fewer layers, initialised from predecessor layers. In training mode every block
draws its own Bernoulli(p) per forward pass (one batch) and runs its successor on success, its
predecessor layers otherwise; in eval mode only the successors run (what :func:`export_successor`
exports). Everything but the successor layers is frozen, so the model's own cross-entropy trains the
successors to stand in for the predecessor blocks around them.

The wrapped model stays the same :class:`~transformers.PreTrainedModel` object: only
the layer list (``base_model.encoder.layer``, ``transformer.h``, ``model.layers``, ...) is replaced by a
:class:`ModuleReplacementLayers`; iterating it yields, block by block, the layers of the drawn path,
so the model's own loop calls each layer with the arguments it prepares for that layer (ModernBERT's
global and local layers get their own masks). ``config.num_hidden_layers`` becomes the successor's
depth, ``config.layer_types`` (ModernBERT, Qwen2) the successor layers' types, copied layers get
their successor index (``layer_idx``), and ``config.use_cache`` is off while the layers are wrapped
(predecessor and successor layers would share cache slots); the exported successor gets it back. Its ``state_dict`` (hence ``save_pretrained`` and every Trainer checkpoint) is laid
out as a standard successor-depth model plus the frozen predecessor layers under the extra keys
``<encoder>.layer.predecessor.<j>.*``: ``from_pretrained`` of the normal class loads the successor
(and reports the extra keys as unused), and ``load_state_dict`` into a model prepared the same way
restores everything.

``output_hidden_states`` / ``output_attentions`` give one entry per block on transformers 4.x and in
eval mode; in training mode transformers 5 records every layer that ran, so their number varies
with the draws.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    ...                     intermediate_size=64, vocab_size=100)
    >>> model = BertForSequenceClassification(config)
    >>> layers = prepare_module_replacement(model, num_successor_layers=2)
    >>> layers.replacement_rate = LinearReplacementSchedule(slope=0.0006, intercept=0.3)(step=1000)
    >>> round(layers.replacement_rate, 6)
    0.9
    >>> student = export_successor(model)
    >>> student.config.num_hidden_layers, len(student.bert.encoder.layer)
    (2, 2)
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, TypeAlias, cast

import torch
from torch import nn
from transformers import PreTrainedModel

from loyalkit.compression.architectures import LayerStack, per_layer_stack
from loyalkit.compression.schedules import schedule_from_dict

EvalPath: TypeAlias = Literal["successor", "predecessor"]
SuccessorInit: TypeAlias = Literal["bottom", "every_kth"] | Sequence[int]

_PREDECESSOR_KEY = "predecessor"


def _check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int >= 0, got {type(step).__name__}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step


@dataclass(frozen=True)
class ConstantReplacementSchedule:
    """p = ``rate`` for the first ``replacing_steps`` steps, then 1.0 (the paper's baseline).

    From ``replacing_steps`` on only successors run: that phase fine-tunes the successor alone.
    ``replacing_steps=None`` keeps ``rate`` for ever.

    >>> schedule = ConstantReplacementSchedule(rate=0.5, replacing_steps=100)
    >>> schedule(0), schedule(99), schedule.value_at(100)
    (0.5, 0.5, 1.0)
    """

    kind: ClassVar[str] = "constant"
    rate: float = 0.5
    replacing_steps: int | None = None

    def __post_init__(self) -> None:
        _check_rate("rate", self.rate)
        steps = self.replacing_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)):
            raise TypeError(f"replacing_steps must be an int >= 0 or None, got {steps!r}")
        if steps is not None and steps < 0:
            raise ValueError(f"replacing_steps must be >= 0 or None, got {steps}")

    def value_at(self, step: int) -> float:
        """The replacement rate p after ``step`` optimizer steps."""
        _check_step(step)
        if self.replacing_steps is not None and step >= self.replacing_steps:
            return 1.0
        return float(self.rate)

    def __call__(self, step: int) -> float:
        return self.value_at(step)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class LinearReplacementSchedule:
    """The paper's curriculum p = min(1, slope * step + intercept) (k and b in the paper).

    The paper grid-searches ``intercept`` in {0.1, 0.3} and picks ``slope`` so that p reaches 1
    within 1k-30k steps; its reference example is ``slope=0.0006, intercept=0.3``.

    >>> schedule = LinearReplacementSchedule(slope=0.0006, intercept=0.3)
    >>> schedule(0), round(schedule(500), 6), schedule(2000)
    (0.3, 0.6, 1.0)
    """

    kind: ClassVar[str] = "linear"
    slope: float = 0.0006
    intercept: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.slope, bool) or not isinstance(self.slope, (int, float)):
            raise TypeError(f"slope must be a float >= 0, got {type(self.slope).__name__}")
        if not math.isfinite(self.slope) or self.slope < 0:
            raise ValueError(f"slope must be a finite float >= 0, got {self.slope}")
        _check_rate("intercept", self.intercept)

    def value_at(self, step: int) -> float:
        """The replacement rate p after ``step`` optimizer steps."""
        return min(1.0, float(self.slope) * _check_step(step) + float(self.intercept))

    def __call__(self, step: int) -> float:
        return self.value_at(step)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


ReplacementSchedule: TypeAlias = ConstantReplacementSchedule | LinearReplacementSchedule
_SCHEDULES: dict[str, type[ConstantReplacementSchedule] | type[LinearReplacementSchedule]] = {
    cls.kind: cls for cls in (ConstantReplacementSchedule, LinearReplacementSchedule)
}


def replacement_schedule_from_dict(data: Mapping[str, Any]) -> ReplacementSchedule:
    """Rebuild a schedule from its ``to_dict()`` (a JSON-friendly form, e.g. for Trainer state)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping from to_dict(), got {type(data).__name__}")
    return schedule_from_dict(data, _SCHEDULES, "data")


class ReplaceableBlock(nn.Module):
    """Consecutive predecessor layers and the successor module that may stand in for them.

    Called exactly like one encoder layer; each inner layer gets the same arguments. transformers
    4.x layers return a tuple ``(hidden_states, *extras)``, 5.x a tensor: the block returns what its
    last layer returned, so the encoder sees the type it expects.
    """

    def __init__(
        self, predecessor: nn.ModuleList, successor: nn.ModuleList, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.predecessor = predecessor
        self.successor = successor
        self.replacement_rate = 0.0
        self.eval_with: EvalPath = "successor"
        # Shared with the other blocks of the encoder: one draw per block, in block order.
        self.generator = generator
        self.is_last = False
        self.successor_offset = 0  # index of its first successor layer in the successor model

    @property
    def attention_type(self) -> Any:
        """The layers' common kind, for loops that read it from each layer (Qwen2 on 4.x)."""
        kinds = {getattr(layer, "attention_type", None) for layer in self.predecessor}
        kinds |= {getattr(layer, "attention_type", None) for layer in self.successor}
        if len(kinds) != 1 or None in kinds:
            raise AttributeError("attention_type")
        return kinds.pop()

    def uses_successor(self) -> bool:
        """Draw the path for one forward pass (training) or return the eval path."""
        if not self.training:
            return self.eval_with == "successor"
        draw = torch.rand((), generator=self.generator)
        return bool(draw.item() < self.replacement_rate)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        layers = self.successor if self.uses_successor() else self.predecessor
        output: Any = hidden_states
        for layer in layers:
            output = layer(hidden_states, *args, **kwargs)
            hidden_states = output[0] if isinstance(output, tuple) else output
        trains = self.training and torch.is_grad_enabled()
        if self.is_last and trains and not hidden_states.requires_grad:
            # Every block drew its frozen predecessor: nothing trains on this batch, yet the caller
            # (the Trainer) still calls backward. A grad-requiring leaf here makes that backward a
            # cheap no-op that leaves the successors' .grad untouched (None on a fresh step, as
            # when only the successors are handed to the optimizer).
            hidden_states.requires_grad_(True)
        return output


class ModuleReplacementLayers(nn.ModuleList):
    """An encoder's layer list under module replacement: :class:`ReplaceableBlock` s in order.

    Built by :func:`prepare_module_replacement`. Set ``replacement_rate`` (p) before each training
    step and, for reproducible draws across resumes and processes, ``manual_seed``.
    """

    def __init__(self, blocks: Sequence[ReplaceableBlock], generator: torch.Generator) -> None:
        super().__init__(blocks)
        self.generator = generator
        self.blocks[-1].is_last = True
        self._grad_hook: Any = None
        # The model's config.use_cache before preparation (turned off meanwhile; the export gets it).
        self.use_cache = False
        # config.layer_types of the layers yielded so far in this forward (Qwen2 indexes it by loop
        # position); see _DrawnLayerTypes.
        self.drawn_types: list[Any] = []
        # Set when the layers are of several kinds (config.layer_types): see __iter__.
        self.flatten = False
        self.register_state_dict_post_hook(_save_as_successor_layout)
        self.register_load_state_dict_pre_hook(_load_from_successor_layout)

    def __iter__(self) -> Iterator[nn.Module]:
        """The blocks; with :attr:`flatten`, the layers of one forward pass instead.

        Flattened, each block's drawn path is yielded layer by layer, so the model's own loop calls
        every layer with the arguments it prepares for that layer: ModernBERT and Qwen2 on
        transformers 5 pick the attention mask (and rotary embedding) by each layer's kind, so a
        block of global and local layers cannot be called as one. Each block draws once, in block
        order, when the loop reaches it. Otherwise the blocks are called like layers, which suits
        loops that index per-layer lists by position (transformers 4.x's ``head_mask``).
        """
        if not self.flatten:
            yield from self._modules.values()
            return
        if self._grad_hook is not None:
            self._grad_hook.remove()
            self._grad_hook = None
        any_successor = False
        self.drawn_types.clear()
        blocks = self.blocks
        for index, block in enumerate(blocks):
            successor = block.uses_successor()
            any_successor = any_successor or successor
            layers = list(block.successor if successor else block.predecessor)
            last = index == len(blocks) - 1
            if last and not any_successor and block.training and torch.is_grad_enabled():
                # Every block drew its frozen predecessor (see ReplaceableBlock.forward).
                self._grad_hook = layers[-1].register_forward_hook(self._output_requires_grad)
            for layer in layers:
                self.drawn_types.append(getattr(layer, _LAYER_TYPE, None))
                yield layer

    def _output_requires_grad(self, module: nn.Module, args: Any, output: Any) -> Any:
        if self._grad_hook is not None:
            self._grad_hook.remove()
            self._grad_hook = None
        hidden = output[0] if isinstance(output, tuple) else output
        if isinstance(hidden, torch.Tensor) and not hidden.requires_grad:
            hidden.requires_grad_(True)
        return output

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            # Llama and Qwen2 loop over `layers[: config.num_hidden_layers]`: the whole drawn path.
            if not self.flatten:
                return nn.ModuleList(list(self._modules.values())[index])
            whole = index.stop is None or index.stop >= len(self)
            if index.start in (None, 0) and index.step in (None, 1) and whole:
                return list(iter(self))
            raise IndexError("a flattened ModuleReplacementLayers can only be sliced as a whole")
        return super().__getitem__(index)

    @property
    def blocks(self) -> list[ReplaceableBlock]:
        # Not `for block in self`: iterating draws the paths of a forward pass.
        return [block for block in self._modules.values() if isinstance(block, ReplaceableBlock)]

    # nn.ModuleList's repr iterates the list (which would draw paths); list the blocks instead.
    __repr__ = nn.Module.__repr__

    @property
    def predecessor_layers_per_block(self) -> int:
        return len(self.blocks[0].predecessor)

    @property
    def successor_layers_per_block(self) -> int:
        return len(self.blocks[0].successor)

    @property
    def replacement_rate(self) -> float:
        return self.blocks[0].replacement_rate

    @replacement_rate.setter
    def replacement_rate(self, value: float) -> None:
        rate = _check_rate("replacement_rate", value)
        for block in self.blocks:
            block.replacement_rate = rate

    @property
    def eval_with(self) -> EvalPath:
        return self.blocks[0].eval_with

    @eval_with.setter
    def eval_with(self, value: EvalPath) -> None:
        if value not in ("successor", "predecessor"):
            raise ValueError(f"eval_with must be 'successor' or 'predecessor', got {value!r}")
        for block in self.blocks:
            block.eval_with = value

    def manual_seed(self, seed: int) -> None:
        """Seed the blocks' Bernoulli draws (they never touch torch's global RNG)."""
        self.generator.manual_seed(seed)

    def successor_parameters(self) -> list[nn.Parameter]:
        return [p for block in self.blocks for p in block.successor.parameters()]

    def predecessor_parameters(self) -> list[nn.Parameter]:
        return [p for block in self.blocks for p in block.predecessor.parameters()]


_LAYER_TYPE = "_loyalkit_layer_type"


class _DrawnLayerTypes(list):
    """``config.layer_types`` while a model's layers are wrapped.

    As a list it holds the successor layers' types (what ``save_pretrained`` writes; copies are
    plain lists). Indexed by an int during a forward pass it answers for the layer at that position
    of the drawn path (Qwen2 reads ``config.layer_types[i]`` in its loop), and iterating it also
    names the predecessor's kinds (ModernBERT builds one mask per kind it finds there).
    """

    def __init__(self, successor: list[Any], drawn: list[Any], kinds: list[Any]) -> None:
        super().__init__(successor)
        self._drawn = drawn
        self._kinds = kinds

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and 0 <= index < len(self._drawn):
            return self._drawn[index]
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Any]:
        yield from list.__iter__(self)
        yield from (kind for kind in self._kinds if kind not in list(list.__iter__(self)))

    def __copy__(self) -> list[Any]:
        return list(list.__iter__(self))

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list(list.__iter__(self)), memo)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (list, (list(list.__iter__(self)),))


_NATIVE_KEY = re.compile(r"(\d+)\.(successor|predecessor)\.(\d+)\.(.+)")
_SUCCESSOR_LAYOUT_KEY = re.compile(r"(\d+)\.(.+)")
_PREDECESSOR_LAYOUT_KEY = re.compile(_PREDECESSOR_KEY + r"\.(\d+)\.(.+)")


def _save_as_successor_layout(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """``<i>.successor.<r>.x`` -> ``<i*s + r>.x``; ``<i>.predecessor.<r>.x`` -> ``predecessor.<i*n + r>.x``."""
    assert isinstance(module, ModuleReplacementLayers)
    per_successor = module.successor_layers_per_block
    per_predecessor = module.predecessor_layers_per_block
    renamed: dict[str, Any] = {}
    for key in [k for k in state_dict if k.startswith(prefix)]:
        match = _NATIVE_KEY.fullmatch(key[len(prefix) :])
        if match is None:
            continue
        block, kind, offset, rest = match.groups()
        if kind == "successor":
            index = int(block) * per_successor + int(offset)
            renamed[f"{prefix}{index}.{rest}"] = state_dict.pop(key)
        else:
            index = int(block) * per_predecessor + int(offset)
            renamed[f"{prefix}{_PREDECESSOR_KEY}.{index}.{rest}"] = state_dict.pop(key)
    # Successor layers first, in layer order, as a standard model would list them.
    for key in sorted(renamed, key=lambda k: k.startswith(prefix + _PREDECESSOR_KEY)):
        state_dict[key] = renamed[key]


def _load_from_successor_layout(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """The inverse of :func:`_save_as_successor_layout`; keys already in module layout are kept."""
    assert isinstance(module, ModuleReplacementLayers)
    per_successor = module.successor_layers_per_block
    per_predecessor = module.predecessor_layers_per_block
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix) :]
        if _NATIVE_KEY.fullmatch(local):
            continue
        predecessor = _PREDECESSOR_LAYOUT_KEY.fullmatch(local)
        if predecessor is not None:
            index, rest = int(predecessor.group(1)), predecessor.group(2)
            block, offset = divmod(index, per_predecessor)
            state_dict[f"{prefix}{block}.predecessor.{offset}.{rest}"] = state_dict.pop(key)
            continue
        successor = _SUCCESSOR_LAYOUT_KEY.fullmatch(local)
        if successor is not None:
            index, rest = int(successor.group(1)), successor.group(2)
            block, offset = divmod(index, per_successor)
            state_dict[f"{prefix}{block}.successor.{offset}.{rest}"] = state_dict.pop(key)


def _layers_of(model: nn.Module) -> LayerStack:
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    return per_layer_stack(model, "module replacement")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _successor_sources(
    init: SuccessorInit, num_layers: int, num_successor_layers: int
) -> list[int]:
    """Indices of the predecessor layers the successor layers are copied from, in order."""
    if isinstance(init, str):
        if init == "bottom":
            return list(range(num_successor_layers))
        if init == "every_kth":
            if num_layers % num_successor_layers:
                raise ValueError(
                    f"successor_init='every_kth' needs num_successor_layers={num_successor_layers} "
                    f"to divide the predecessor's {num_layers} layers"
                )
            k = num_layers // num_successor_layers
            return [k * (i + 1) - 1 for i in range(num_successor_layers)]
        raise ValueError(
            f"successor_init must be 'bottom', 'every_kth' or a sequence of layer indices, got {init!r}"
        )
    if not isinstance(init, Sequence):
        raise TypeError(f"successor_init must be a str or a sequence of ints, got {init!r}")
    sources: list[int] = []
    for index in init:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_layers:
            raise ValueError(
                f"successor_init indices must be ints in [0, {num_layers}), got {index!r}"
            )
        sources.append(index)
    if len(sources) != num_successor_layers:
        raise ValueError(
            f"successor_init must list num_successor_layers={num_successor_layers} layer indices, "
            f"got {len(sources)}"
        )
    return sources


def prepare_module_replacement(
    model: PreTrainedModel,
    num_successor_layers: int,
    *,
    num_modules: int | None = None,
    successor_init: SuccessorInit = "bottom",
    replacement_rate: float = 0.5,
    eval_with: EvalPath = "successor",
    seed: int = 0,
) -> ModuleReplacementLayers:
    """Turn a fine-tuned classifier into a predecessor/successor pair, in place.

    Args:
        model: a transformers classifier with N layers (not ALBERT's shared ones); it is changed
            in place: pass ``copy.deepcopy(teacher)`` if the teacher is still needed.
        num_successor_layers: S, the successor's depth (1 <= S < N).
        num_modules: M, how many blocks are replaced independently; each predecessor block has
            N/M layers and its successor S/M. Default S (the paper: one layer per successor module).
        successor_init: ``"bottom"`` copies predecessor layers 0..S-1 (the paper), ``"every_kth"``
            copies layers k-1, 2k-1, ..., N-1 for k = N/S (the top layer of each k-layer group), or
            a sequence of S predecessor layer indices.
        replacement_rate: the initial p (a callback or the caller sets it each step).
        eval_with: the path in eval mode; ``"successor"`` (default) evaluates what is exported.
        seed: seeds the Bernoulli draws (a private generator; torch's global RNG is not used).

    Returns:
        The :class:`ModuleReplacementLayers` now in place of the model's layer list. Only the
        successor parameters keep ``requires_grad``: build the optimizer (or Trainer) afterwards.
    """
    stack = _layers_of(model)
    if isinstance(stack.layers, ModuleReplacementLayers):
        raise ValueError("model is already prepared for module replacement")
    layers: list[nn.Module] = list(stack.layers)
    num_layers = len(layers)
    num_successor_layers = _positive_int("num_successor_layers", num_successor_layers)
    if num_successor_layers >= num_layers:
        raise ValueError(
            f"num_successor_layers={num_successor_layers} must be smaller than the predecessor's "
            f"{num_layers} layers"
        )
    modules = num_successor_layers if num_modules is None else num_modules
    modules = _positive_int("num_modules", modules)
    if num_layers % modules:
        name = "num_successor_layers" if num_modules is None else "num_modules"
        raise ValueError(
            f"{name}={modules} must divide the predecessor's {num_layers} layers "
            "(config.num_hidden_layers)"
        )
    if num_successor_layers % modules:
        raise ValueError(
            f"num_modules={modules} must divide num_successor_layers={num_successor_layers}"
        )
    sources = _successor_sources(successor_init, num_layers, num_successor_layers)
    _check_attention_pattern(model, sources)
    if eval_with not in ("successor", "predecessor"):
        raise ValueError(f"eval_with must be 'successor' or 'predecessor', got {eval_with!r}")
    rate = _check_rate("replacement_rate", replacement_rate)

    model.requires_grad_(False)
    per_predecessor = num_layers // modules
    per_successor = num_successor_layers // modules
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for i in range(modules):
        predecessor = nn.ModuleList(layers[i * per_predecessor : (i + 1) * per_predecessor])
        successor = nn.ModuleList(
            copy.deepcopy(layers[j]) for j in sources[i * per_successor : (i + 1) * per_successor]
        )
        for offset, layer in enumerate(successor):
            _renumber(layer, i * per_successor + offset, like=layers[i * per_successor + offset])
        successor.requires_grad_(True)
        block = ReplaceableBlock(predecessor, successor, generator)
        block.successor_offset = i * per_successor
        blocks.append(block)
    replacement = ModuleReplacementLayers(blocks, generator)
    replacement.replacement_rate = rate
    replacement.eval_with = eval_with
    replacement.train(model.training)
    setattr(stack.owner, stack.attribute, replacement)
    # The config describes what save_pretrained writes and from_pretrained rebuilds: the successor.
    config: Any = model.config
    config.num_hidden_layers = num_successor_layers
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        # ModernBERT (global/local), Qwen2 (full/sliding): each successor layer keeps its source's.
        for j, layer in enumerate(layers):
            setattr(layer, _LAYER_TYPE, layer_types[j])
        for block in blocks:
            for layer, j in zip(block.successor, _block_sources(block, sources), strict=True):
                setattr(layer, _LAYER_TYPE, layer_types[j])
        successor_types = [layer_types[j] for j in sources]
        replacement.flatten = len(set(layer_types)) > 1
        config.layer_types = (
            _DrawnLayerTypes(successor_types, replacement.drawn_types, list(layer_types))
            if replacement.flatten
            else successor_types
        )
    if getattr(config, "use_cache", False):
        # Predecessor and successor layers share layer indices; a classifier needs no cache.
        replacement.use_cache = True
        config.use_cache = False
    return replacement


def _check_attention_pattern(model: nn.Module, sources: list[int]) -> None:
    """Refuse a successor whose global/local layers the model's config cannot describe.

    transformers 5 records each layer's kind in ``config.layer_types``, which the successor gets.
    ModernBERT on transformers 4.x derives it from the position (``layer_id %
    global_attn_every_n_layers``), so a copied layer must land on a position of its own kind.
    """
    config: Any = model.config
    every = getattr(config, "global_attn_every_n_layers", None)
    if (
        not isinstance(every, int)
        or every < 1
        or isinstance(getattr(config, "layer_types", None), list)
    ):
        return
    wrong = [(i, j) for i, j in enumerate(sources) if (i % every == 0) != (j % every == 0)]
    if wrong:
        i, j = wrong[0]
        raise ValueError(
            f"successor_init: {type(model).__name__} layer {j} would become successor layer {i}, "
            f"but with global_attn_every_n_layers={every} one is global and the other local "
            "attention, and this transformers version derives that from the position; pick "
            "sources of the same kind (successor_init='bottom' always does) or use transformers 5, "
            "whose config.layer_types records each layer's kind"
        )


def _block_sources(block: ReplaceableBlock, sources: list[int]) -> list[int]:
    start = block.successor_offset
    return sources[start : start + len(block.successor)]


def _renumber(layer: nn.Module, index: int, like: nn.Module) -> None:
    """Make a copied layer the successor's layer ``index``, as ``from_pretrained`` will build it.

    It gets that index (caches, GPT-2's per-layer scaling) and the structure of the predecessor's
    layer at that position where that one has no module (ModernBERT's first layer has no attention
    pre-norm: its ``attn_norm`` is an ``nn.Identity``).
    """
    for name, child in like.named_children():
        if isinstance(child, nn.Identity) and not isinstance(
            getattr(layer, name, None), nn.Identity
        ):
            setattr(layer, name, nn.Identity())
    for module in layer.modules():
        for name in ("layer_idx", "layer_id"):
            if isinstance(getattr(module, name, None), int):
                setattr(module, name, index)


def find_module_replacement(model: nn.Module) -> ModuleReplacementLayers:
    """The :class:`ModuleReplacementLayers` of a model prepared by :func:`prepare_module_replacement`."""
    for module in model.modules():
        if isinstance(module, ModuleReplacementLayers):
            return module
    raise ValueError(
        f"{type(model).__name__} is not prepared for module replacement: call "
        "prepare_module_replacement(model, num_successor_layers) before building the optimizer "
        "(or the Trainer)"
    )


def _predecessor_prefix(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if isinstance(module, ModuleReplacementLayers):
            return f"{name}.{_PREDECESSOR_KEY}."
    raise ValueError(f"{type(model).__name__} is not prepared for module replacement")


def export_successor(model: PreTrainedModel) -> PreTrainedModel:
    """The successor alone as a standalone model of the model's own class, in eval mode.

    It holds copies of the predecessor's embeddings, pooler and head and of the successor layers,
    has ``config.num_hidden_layers`` = the successor's depth, and predicts exactly as the wrapped
    model does in eval mode with ``eval_with="successor"``. Save it with ``save_pretrained``.
    A model quantized to int8 by torchao (``quantize_dynamic_int8``, ``convert_qat``) gives the
    int8 successor, with the same quantization config: save it with ``save_quantized``.
    """
    prefix = _predecessor_prefix(model)
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        raise ValueError(
            "a model quantized with the torch.ao backend cannot be exported: export the successor "
            "first and quantize it, or quantize with the torchao backend"
        )
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    parameter = next(model.parameters())
    model_class: Any = type(model)
    config = copy.deepcopy(model.config)
    if getattr(find_module_replacement(model), "use_cache", False):
        config.use_cache = True
    successor = cast(
        PreTrainedModel,
        model_class(config).to(device=parameter.device, dtype=parameter.dtype),
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        successor.load_state_dict(state, strict=True)
        successor.requires_grad_(True)
    else:
        # int8 tensor subclasses cannot be copied into float parameters: take copies as they are.
        successor.load_state_dict(copy.deepcopy(state), strict=True, assign=True)
        successor.hf_quantizer = quantizer
    return successor.eval()
