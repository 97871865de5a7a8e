"""Where a transformers classifier keeps its transformer layers and their weight matrices.

Every compression method needs the same two facts about a model: the list of its transformer layers
(``bert.encoder.layer``, ``distilbert.transformer.layer``, ``transformer.h``, ``model.layers``, ...)
and the weight matrices inside them (``nn.Linear`` and transformers' ``Conv1D``, which GPT-2 uses with
its weight stored transposed). :func:`layer_stack` finds the first, :func:`block_weight_modules` the
second, for every family whose base model holds its layers in one ``nn.ModuleList`` of
``config.num_hidden_layers`` entries, and for ALBERT, whose layers are shared (one group of weights
run ``num_hidden_layers`` times): methods that need one module per layer ask :func:`per_layer_stack`,
which refuses ALBERT by name.

Example:
    >>> from transformers import GPT2Config, GPT2ForSequenceClassification
    >>> model = GPT2ForSequenceClassification(GPT2Config(n_embd=32, n_layer=2, n_head=4,
    ...                                                  vocab_size=50, n_positions=32))
    >>> stack = layer_stack(model)
    >>> stack.path, len(stack.layers), stack.shared
    ('transformer.h', 2, False)
    >>> sorted(block_weight_modules(model))[:2]
    ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj']
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = [
    "LayerStack",
    "PER_LAYER_FAMILIES",
    "block_weight_modules",
    "is_conv1d",
    "layer_stack",
    "per_layer_stack",
]

# Checked by tests/test_architecture_matrix.py; other families with one layer list work as well.
PER_LAYER_FAMILIES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "electra",
    "distilbert",
    "deberta-v2",
    "modernbert",
    "gpt2",
    "llama",
    "qwen2",
)

# (attribute path below the base model, whether the layers are shared), most specific first
_KNOWN_PATHS: tuple[tuple[str, bool], ...] = (
    ("encoder.albert_layer_groups", True),
    ("encoder.layer", False),
    ("transformer.layer", False),
    ("layers", False),
    ("h", False),
)


@dataclass(frozen=True)
class LayerStack:
    """A model's transformer layers: ``owner.<attribute>`` is ``layers``, named ``path`` in the model.

    ``shared`` is True when the modules are reused across layers (ALBERT's layer groups), so that
    ``len(layers)`` is not the model's depth.
    """

    family: str
    path: str
    owner: nn.Module
    attribute: str
    layers: nn.ModuleList
    shared: bool


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (a linear layer with a transposed weight)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def _family(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", None) or type(model).__name__)


def _resolve(root: nn.Module, dotted: str) -> nn.Module | None:
    module: nn.Module | None = root
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def layer_stack(model: nn.Module) -> LayerStack:
    """The transformer layers of ``model`` (a transformers model or its base model).

    Raises ValueError naming the model class when no layer list is found.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    base = getattr(model, "base_model", model)
    prefix = next((name for name, module in model.named_modules() if module is base), "")
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [(path, shared) for path, shared in _KNOWN_PATHS]
    for path, shared in candidates:
        layers = _resolve(base, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            owner_path, _, attribute = path.rpartition(".")
            owner = _resolve(base, owner_path) if owner_path else base
            assert owner is not None
            full = f"{prefix}.{path}" if prefix else path
            return LayerStack(_family(model), full, owner, attribute, layers, shared)
    # Any other family: the one ModuleList of config.num_hidden_layers layers in the base model.
    found = [
        (name, module)
        for name, module in base.named_modules()
        if isinstance(module, nn.ModuleList) and depth is not None and len(module) == depth
    ]
    if len(found) == 1:
        name, layers = found[0]
        owner_path, _, attribute = name.rpartition(".")
        owner = _resolve(base, owner_path) if owner_path else base
        assert owner is not None and isinstance(layers, nn.ModuleList)
        full = f"{prefix}.{name}" if prefix else name
        return LayerStack(_family(model), full, owner, attribute, layers, False)
    raise ValueError(
        f"{type(model).__name__}: no list of transformer layers found (looked for "
        f"{', '.join(p for p, _ in _KNOWN_PATHS)} below the base model, and for one nn.ModuleList "
        f"of config.num_hidden_layers modules); supported families: {', '.join(PER_LAYER_FAMILIES)}"
        ", albert"
    )


def per_layer_stack(model: nn.Module, method: str) -> LayerStack:
    """:func:`layer_stack`, refusing shared layers (ALBERT) for ``method``, which needs one module per layer."""
    stack = layer_stack(model)
    if stack.shared:
        raise ValueError(
            f"{method} needs one module per transformer layer, but {type(model).__name__} "
            f"({stack.family}) shares its layers' weights across all {_depth(model)} layers "
            f"({stack.path}); supported families: {', '.join(PER_LAYER_FAMILIES)}"
        )
    return stack


def _depth(model: nn.Module) -> object:
    return getattr(getattr(model, "config", None), "num_hidden_layers", "?")


def block_weight_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The ``nn.Linear`` and ``Conv1D`` modules inside the transformer layers, by full module name.

    Embeddings, poolers and the classification head are outside the layers and not listed.
    """
    stack = layer_stack(model)
    return {
        f"{stack.path}.{name}": module
        for name, module in stack.layers.named_modules()
        if isinstance(module, nn.Linear) or is_conv1d(module)
    }
