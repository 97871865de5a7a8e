"""int8 quantization of a model's ``nn.Linear`` layers: post-training (dynamic) and quantization-aware.

This is int8 inside PyTorch (to keep training it, or to run it where PyTorch runs). For the fastest
int8 on CPU, which the study uses, see :mod:`loyalkit.compression.openvino_int8` (``export_int8``):
torchao's eager int8 measured 0.89x over fp32 on MiniLM at 1 thread, OpenVINO + NNCF 3.72x
(``benchmarks/RESULTS.md``).

Every weight matrix of the transformer layers is quantized, or nothing is: transformers' ``Conv1D``
(GPT-2's layers, a linear layer with its weight stored transposed) is first turned into an
``nn.Linear`` holding the same ``Parameter`` (its data transposed), and a model whose layers hold a
matrix in any other kind of module is refused before anything changes. The result states the share
of block weights quantized (:attr:`Int8Quantization.block_weight_share`, 1.0 on success), so that a
run that leaves the layers in float cannot pass for an int8 model. A model whose ``Conv1D`` layers
were converted runs as before but cannot be saved as int8 with ``save_pretrained`` (its class
rebuilds ``Conv1D``): save the float model and quantize after loading.

Post-training quantization goes through torchao (``Int8DynamicActivationInt8WeightConfig``: int8
weights, symmetric per output channel; activations quantized per token at run time). The deprecated
``torch.ao.quantization.quantize_dynamic`` (fbgemm: int8 per-channel symmetric weights, activations
quantized per tensor to 7 bits at run time) is the fallback when torchao is missing or fails, or the
explicit choice ``backend="torch.ao"``: on a 2-core x86 CPU without AMX it ran MiniLM-L6 2.5-3x
faster than torchao, but flipped more of the teacher's labels (see the README).

Quantization-aware training inserts torchao's fake quantization (int8 per-channel symmetric weights,
int8 per-token asymmetric activations) with :func:`prepare_qat` and converts the trained model to
the matching real int8 model with :func:`convert_qat`.

Saving: a torchao-quantized ``PreTrainedModel`` carries a ``TorchAoConfig`` (as if it had been
loaded with ``from_pretrained(..., quantization_config=TorchAoConfig(...))``), so
``save_pretrained`` writes the int8 tensors with the config and a plain ``from_pretrained`` reloads
the quantized model. transformers 5 writes safetensors; 4.57 accepts only
``safe_serialization=False`` (a pickle, ``pytorch_model.bin``) for int8 configs:
:func:`supports_safetensors` tells which, and :func:`save_quantized` picks what works.
A ``torch.ao`` model cannot be saved this way: save the fp32 model and quantize after loading.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from loyalkit.compression import quantize_dynamic_int8
    >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=64)
    >>> model = BertForSequenceClassification(config).eval()
    >>> quantize_dynamic_int8(model).backend
    'torchao'
    >>> model(input_ids=torch.tensor([[1, 5, 7, 2]])).logits.shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from loyalkit.compression.architectures import is_conv1d, layer_stack

__all__ = [
    "INT8_BACKENDS",
    "Int8Quantization",
    "block_weight_share",
    "check_int8_options",
    "convert_qat",
    "is_fake_quantized",
    "prepare_qat",
    "quantize_dynamic_int8",
    "save_quantized",
    "strip_fake_quantization",
    "supports_safetensors",
]

Int8Backend = Literal["auto", "torchao", "torch.ao"]
INT8_BACKENDS: tuple[str, ...] = ("auto", "torchao", "torch.ao")


@dataclass(frozen=True)
class Int8Quantization:
    """What :func:`quantize_dynamic_int8` or :func:`convert_qat` did.

    ``backend`` is ``"torchao"`` or ``"torch.ao"``; ``fallback_reason`` says why torchao was not
    used when ``backend="auto"`` fell back.
    """

    backend: str
    quantized_layers: int
    fallback_reason: str | None = None
    block_weight_share: float = 1.0
    """Share of the transformer layers' weight elements now int8 (all Linear weights of a plain module)."""


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _is_quantized_linear(module: nn.Module) -> bool:
    if type(module).__module__.startswith("torch.ao.nn.quantized"):
        return hasattr(module, "weight")
    weight = getattr(module, "weight", None)
    return isinstance(module, nn.Linear) and type(getattr(weight, "data", None)) is not torch.Tensor


def _block_matrices(model: nn.Module) -> dict[str, nn.Module]:
    """Modules holding the matrices that must be quantized: inside the transformer layers.

    A model without a recognised layer list (a plain module) is judged on all its Linear layers.
    """
    try:
        stack = layer_stack(model)
    except ValueError:
        root, prefix = model, ""
    else:
        root, prefix = stack.layers, stack.path + "."
    found = {}
    for name, module in root.named_modules():
        if isinstance(module, nn.Embedding):
            continue
        own = dict(module.named_parameters(recurse=False))
        holds_matrix = any(p.dim() == 2 for p in own.values())
        if (
            holds_matrix
            or isinstance(module, nn.Linear)
            or is_conv1d(module)
            or _is_quantized_linear(module)
        ):
            found[prefix + name] = module
    return found


def _elements(module: nn.Module) -> int:
    if type(module).__module__.startswith("torch.ao.nn.quantized"):
        weight = cast(Any, module).weight()
        return int(weight.numel())
    return sum(p.numel() for p in module.parameters(recurse=False) if p.dim() == 2)


def block_weight_share(model: nn.Module) -> float:
    """The share of the transformer layers' weight elements held by int8 (or fake-quantized) layers.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> block_weight_share(model)
        0.0
    """
    from torchao.quantization.qat import FakeQuantizedLinear

    modules = _block_matrices(_check_model(model))
    total = sum(_elements(m) for m in modules.values())
    done = sum(
        _elements(m)
        for m in modules.values()
        if _is_quantized_linear(m) or isinstance(m, FakeQuantizedLinear)
    )
    return done / total if total else 0.0


def _convert_conv1d(model: nn.Module) -> int:
    """Replace every transformers ``Conv1D`` by an ``nn.Linear`` holding the same parameters.

    The weight ``Parameter`` object is kept (its data transposed in place) so that an optimizer
    built before this call keeps training it; forward results are unchanged. The model's
    ``state_dict`` keeps writing (and ``load_state_dict`` reading) float weights in ``Conv1D``
    layout, so checkpoints of a fake-quantized GPT-2 reload into a plain GPT-2.
    """
    converted: list[str] = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not is_conv1d(child):
                continue
            weight = cast(nn.Parameter, child.weight)
            bias = cast(nn.Parameter, child.bias)
            linear = nn.Linear(
                int(weight.shape[0]),
                int(weight.shape[1]),
                bias=False,
                device="meta",
                dtype=weight.dtype,
            )
            with torch.no_grad():
                weight.data = weight.data.t().contiguous()
            linear.weight = weight
            linear.bias = bias
            setattr(parent, child_name, linear)
            converted.append(f"{name}.{child_name}.weight" if name else f"{child_name}.weight")
    if converted:
        model._loyalkit_conv1d_converted = True  # type: ignore[assignment]
        keys = frozenset(converted)
        model.register_state_dict_post_hook(partial(_save_in_conv1d_layout, keys))
        model.register_load_state_dict_pre_hook(partial(_load_from_conv1d_layout, keys))
    return len(converted)


_CONVERTED_INT8 = (
    "its Conv1D layers (GPT-2) were turned into nn.Linear to be quantized and its class rebuilds "
    "Conv1D on loading, so the int8 weights cannot be saved (nor its state_dict taken): save the "
    "float model and quantize after loading"
)


def _save_in_conv1d_layout(
    keys: frozenset[str], module: nn.Module, state: dict[str, Any], prefix: str, *args: Any
) -> None:
    for key in keys:
        value = state.get(prefix + key)
        if value is None:
            continue
        if type(value) is not torch.Tensor:  # int8: a plain save_pretrained would fail obscurely
            raise ValueError(_CONVERTED_INT8)
        if value.dim() == 2:
            state[prefix + key] = value.t().contiguous()


def _load_from_conv1d_layout(
    keys: frozenset[str], module: nn.Module, state: dict[str, Any], prefix: str, *args: Any
) -> None:
    for key in keys:
        value = state.get(prefix + key)
        if type(value) is torch.Tensor and value.dim() == 2:
            state[prefix + key] = value.t()


def _check_everything_quantizable(model: nn.Module) -> None:
    """Refuse (before any change) a model whose layers hold matrices outside ``nn.Linear``/``Conv1D``."""
    modules = _block_matrices(model)
    if not modules:
        raise ValueError(
            f"`model` ({type(model).__name__}) has no weight matrix in its transformer layers to quantize"
        )
    others = [
        name
        for name, m in modules.items()
        if not (isinstance(m, nn.Linear) or is_conv1d(m) or _is_quantized_linear(m))
    ]
    if others:
        raise ValueError(
            f"`model` ({type(model).__name__}) keeps weight matrices of its transformer layers in "
            f"modules int8 quantization cannot handle ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}: only nn.Linear and transformers Conv1D are "
            "quantized); refusing rather than leaving them in float"
        )


def _check_share(model: nn.Module, what: str) -> float:
    share = block_weight_share(model)
    if share < 1.0:
        raise RuntimeError(
            f"{what} left {1 - share:.1%} of the transformer layers' weights of "
            f"{type(model).__name__} in float: this is not an int8 model"
        )
    return share


def _plain_linears(model: nn.Module) -> list[nn.Linear]:
    """The float ``nn.Linear`` layers (fake-quantized ones excluded: they are ``nn.Linear`` too)."""
    # A torchao-quantized weight is a tensor subclass (Int8Tensor) that still reports a float dtype.
    return [
        m
        for m in model.modules()
        if type(m) is nn.Linear
        and type(m.weight.data) is torch.Tensor
        and m.weight.is_floating_point()
    ]


def _ptq_config(symmetric_activations: bool) -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from torchao.quantization.quant_primitives import MappingType

    mapping = MappingType.SYMMETRIC if symmetric_activations else MappingType.ASYMMETRIC
    # set_inductor_config=True would change torch._inductor's global configuration.
    return Int8DynamicActivationInt8WeightConfig(
        act_mapping_type=mapping, set_inductor_config=False
    )


def _attach_torchao_config(model: nn.Module, ao_config: Any) -> None:
    """Make ``save_pretrained`` write the int8 tensors and ``from_pretrained`` restore them.

    This is what ``from_pretrained(..., quantization_config=TorchAoConfig(ao_config))`` leaves on a
    model; plain modules (not ``PreTrainedModel``) are left as they are.
    """
    from transformers import PreTrainedModel, TorchAoConfig
    from transformers.quantizers import AutoHfQuantizer

    if not isinstance(model, PreTrainedModel) or getattr(
        model, "_loyalkit_conv1d_converted", False
    ):
        return  # a converted Conv1D model would reload its int8 Linear weights into Conv1D shapes
    hf_config = TorchAoConfig(quant_type=ao_config)
    quantizer = AutoHfQuantizer.from_config(hf_config)
    # from_pretrained runs this before loading; transformers 4.57 sets `offload` here, which its
    # save_pretrained reads.
    quantizer.validate_environment()
    model.hf_quantizer = quantizer
    model.config.quantization_config = hf_config


def _quantize_torchao(model: nn.Module, symmetric_activations: bool) -> int:
    from torchao.quantization import quantize_

    linears = _plain_linears(model)
    originals = [(m, m.weight) for m in linears]
    selected = set(linears)
    config = _ptq_config(symmetric_activations)
    try:
        quantize_(model, config, filter_fn=lambda m, _: m in selected)
    except Exception:
        # quantize_ swaps weights one layer at a time: undo a partial run before falling back.
        for module, weight in originals:
            module.weight = weight
        raise
    _attach_torchao_config(model, config)
    return len(linears)


def _quantize_torch_ao(model: nn.Module) -> int:
    count = len(_plain_linears(model))
    with warnings.catch_warnings():
        # Chosen deliberately (see the module docstring); its deprecation notices are noise here.
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        # Per-channel weights: as fast as the per-tensor default here, and fewer label flips.
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True
        )
    return count


def check_int8_options(backend: object, symmetric_activations: object) -> None:
    """Raise unless ``backend`` and ``symmetric_activations`` are valid for
    :func:`quantize_dynamic_int8` (the one place their bounds are declared)."""
    if backend not in INT8_BACKENDS:
        raise ValueError(f"`backend` must be one of {INT8_BACKENDS}, got {backend!r}")
    if not isinstance(symmetric_activations, bool):
        raise TypeError(f"`symmetric_activations` must be a bool, got {symmetric_activations!r}")


def quantize_dynamic_int8(
    model: nn.Module,
    *,
    backend: Int8Backend = "auto",
    symmetric_activations: bool = True,
) -> Int8Quantization:
    """Quantize every float ``nn.Linear`` of ``model`` to int8 in place (dynamic activations).

    ``backend="auto"`` uses torchao and falls back to ``torch.ao`` (with a warning) when torchao is
    missing or fails; ``"torchao"`` and ``"torch.ao"`` force one. ``symmetric_activations`` selects
    torchao's activation mapping (``torch.ao`` always uses its own asymmetric uint8 activations).
    Quantized models run on CPU, for inference.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> quantize_dynamic_int8(model, backend="torch.ao")
        Int8Quantization(backend='torch.ao', quantized_layers=2, fallback_reason=None, block_weight_share=1.0)
    """
    _check_model(model)
    check_int8_options(backend, symmetric_activations)
    _check_everything_quantizable(model)
    _convert_conv1d(model)
    if backend == "torch.ao":
        count = _quantize_torch_ao(model)
        return Int8Quantization("torch.ao", count, None, _check_share(model, "int8 quantization"))
    if backend == "torchao":
        count = _quantize_torchao(model, symmetric_activations)
        return Int8Quantization("torchao", count, None, _check_share(model, "int8 quantization"))
    try:
        count = _quantize_torchao(model, symmetric_activations)
        return Int8Quantization("torchao", count, None, _check_share(model, "int8 quantization"))
    except Exception as error:  # ImportError or a torchao failure: both mean "use the fallback"
        reason = f"{type(error).__name__}: {error}"
    warnings.warn(
        f"torchao int8 quantization unavailable ({reason}); using torch.ao.quantization",
        RuntimeWarning,
        stacklevel=2,
    )
    count = _quantize_torch_ao(model)
    return Int8Quantization("torch.ao", count, reason, _check_share(model, "int8 quantization"))


def _qat_fake_quantize_configs() -> tuple[Any, Any]:
    from torchao.quantization.qat import IntxFakeQuantizeConfig

    # torchao fake-quantizes per-token activations only asymmetrically; convert_qat matches it.
    activations = IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False)
    weights = IntxFakeQuantizeConfig(torch.int8, "per_channel", is_symmetric=True)
    return activations, weights


def is_fake_quantized(model: nn.Module) -> bool:
    """Whether :func:`prepare_qat` fake quantization is active in ``model``."""
    from torchao.quantization.qat import FakeQuantizedLinear

    return any(isinstance(m, FakeQuantizedLinear) for m in _check_model(model).modules())


def prepare_qat(model: nn.Module) -> int:
    """Insert int8 fake quantization into every float ``nn.Linear`` of ``model``; return the count.

    The fake-quantized layers keep the original weight and bias ``Parameter`` objects, so an
    optimizer built before this call still trains them. Train as usual, then :func:`convert_qat`.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> prepare_qat(model), is_fake_quantized(model)
        (2, True)
    """
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    _check_model(model)
    if is_fake_quantized(model):
        raise ValueError("`model` is already prepared for quantization-aware training")
    _check_everything_quantizable(model)
    _convert_conv1d(model)
    selected = set(_plain_linears(model))
    activations, weights = _qat_fake_quantize_configs()
    config = QATConfig(activation_config=activations, weight_config=weights, step="prepare")
    quantize_(model, config, filter_fn=lambda m, _: m in selected)
    _check_share(model, "quantization-aware training")
    return len(selected)


def convert_qat(model: nn.Module) -> Int8Quantization:
    """Replace :func:`prepare_qat`'s fake quantization by the real int8 model it simulated.

    The result is torchao's dynamic int8 model with asymmetric per-token activations, i.e.
    ``quantize_dynamic_int8(model, symmetric_activations=False)`` of the trained weights.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> _ = prepare_qat(model)
        >>> convert_qat(model).quantized_layers
        2
    """
    from torchao.quantization import quantize_
    from torchao.quantization.qat import FakeQuantizedLinear, QATConfig

    _check_model(model)
    count = sum(isinstance(m, FakeQuantizedLinear) for m in model.modules())
    if count == 0:
        raise ValueError("`model` has no fake-quantized layers: call prepare_qat(model) first")
    config = _ptq_config(symmetric_activations=False)
    quantize_(
        model,
        QATConfig(config, step="convert"),
        filter_fn=lambda m, _: isinstance(m, FakeQuantizedLinear),
    )
    _attach_torchao_config(model, config)
    return Int8Quantization("torchao", count, None, _check_share(model, "convert_qat"))


def strip_fake_quantization(model: nn.Module) -> int:
    """Turn :func:`prepare_qat`'s fake-quantized layers back into float ``nn.Linear``; return the count.

    The trained weights stay as they are: what :func:`~loyalkit.compression.export_int8` then
    quantizes for deployment (int8 per-channel symmetric weights, as the fake quantization trained).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> _ = prepare_qat(model)
        >>> strip_fake_quantization(model), is_fake_quantized(model)
        (2, False)
    """
    from torchao.quantization.qat import FakeQuantizedLinear

    count = 0
    for parent in list(_check_model(model).modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantizedLinear):
                setattr(parent, name, child.to_linear())
                count += 1
    if count == 0:
        raise ValueError("`model` has no fake-quantized layers: call prepare_qat(model) first")
    return count


def _check_saveable(model: nn.Module) -> Any:
    """The quantizer that ``save_pretrained`` consults, or a ValueError if there is none."""
    if getattr(model, "_loyalkit_conv1d_converted", False):
        raise ValueError(f"`model` ({type(model).__name__}): {_CONVERTED_INT8}")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or not callable(getattr(model, "save_pretrained", None)):
        raise ValueError(
            "`model` must be a transformers model quantized by quantize_dynamic_int8 with the "
            "torchao backend (or convert_qat); torch.ao models cannot be saved: save the float "
            "model and quantize after loading"
        )
    return quantizer


def supports_safetensors(model: nn.Module) -> bool:
    """Whether ``model.save_pretrained`` can write this torchao int8 model as safetensors.

    True on transformers 5 (it always writes safetensors); False on 4.57, which writes torchao
    int8 weights only with ``safe_serialization=False`` (as ``pytorch_model.bin``).
    """
    quantizer = _check_saveable(model)
    # transformers 4.57 asks the quantizer about the format; 5.x's quantizer takes no argument.
    if "safe_serialization" in inspect.signature(quantizer.is_serializable).parameters:
        return bool(quantizer.is_serializable(safe_serialization=True))
    return True


def save_quantized(model: nn.Module, save_directory: str | Path) -> None:
    """``model.save_pretrained(save_directory)`` for a torchao int8 model, on transformers 4.57 too.

    Reload with a plain ``AutoModelForSequenceClassification.from_pretrained(save_directory)``.
    transformers 4.57 refuses safetensors for torchao int8 weights: then the weights are pickled
    (``safe_serialization=False``, ``pytorch_model.bin``), which ``from_pretrained`` reads as well.
    """
    _check_saveable(model)
    if supports_safetensors(model):
        model.save_pretrained(save_directory)  # type: ignore[operator]
    else:
        model.save_pretrained(save_directory, safe_serialization=False)  # type: ignore[operator]
