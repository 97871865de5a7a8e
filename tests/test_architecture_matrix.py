"""Every compression method on tiny classifiers of eleven architectures, each cell checked independently.

The expected block weights come from ``tiny_architectures.BLOCK_WEIGHTS`` (regular expressions
written from the transformers source), zeros are counted here, losses recomputed by hand, logits
compared before and after a physical change and after reloading. A method that cannot apply to an
architecture must refuse with an error naming it; no cell passes by doing nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny_architectures import (
    ARCHITECTURES,
    block_weight_names,
    logits,
    tiny_batch,
    tiny_classifier,
)

from loyalkit.compression import (
    CubicSchedule,
    block_weight_share,
    convert_qat,
    magnitude_prune,
    prepare_qat,
    quantize_dynamic_int8,
    save_quantized,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _zero_share(weights: list[torch.Tensor]) -> float:
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


# ---------------------------------------------------------------- magnitude pruning


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_pruning_finds_every_block_weight(arch: str, scope: str) -> None:
    model = tiny_classifier(arch)
    expected = block_weight_names(arch, model)
    assert len(expected) >= 4  # the test's own pattern finds the family's matrices
    parameters = dict(model.named_parameters())
    others = {n: p.detach().clone() for n, p in parameters.items() if n not in expected}
    masks = magnitude_prune(model, 0.5, scope=scope)
    assert sorted(masks.masks) == sorted(expected)
    weights = [parameters[name].detach() for name in expected]
    if scope == "layer":
        for name, weight in zip(expected, weights, strict=True):
            assert int((weight == 0).sum()) == round(0.5 * weight.numel()), name
    else:
        assert _zero_share(weights) == pytest.approx(0.5, abs=1e-9)
        # one threshold: every kept weight is at least as large as every pruned one
        kept = torch.cat([w[w != 0].abs() for w in weights])
        everything = torch.cat([w.abs().flatten() for w in weights])
        pruned_count = round(0.5 * everything.numel())
        assert float(kept.min()) >= float(everything.sort().values[pruned_count - 1])
    for name, value in others.items():  # embeddings, norms, head: untouched
        assert torch.equal(parameters[name], value), name


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_scheduled_magnitude_pruning_in_a_trainer(arch: str, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from loyalkit.callbacks import MagnitudePruningCallback

    model = tiny_classifier(arch).train()
    batch = tiny_batch(arch, rows=16, seed=1)
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    schedule = CubicSchedule(target_sparsity=0.6, start_step=0, end_step=2, frequency=1)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=data, callbacks=[MagnitudePruningCallback(schedule)]
    )
    trainer.train()
    parameters = dict(model.named_parameters())
    weights = [parameters[name].detach() for name in block_weight_names(arch, model)]
    assert _zero_share(weights) == pytest.approx(0.6, abs=1e-3)


# ---------------------------------------------------------------- int8 PTQ and QAT


def _float_block_weights(model: torch.nn.Module, names: list[str]) -> list[str]:
    """Expected block weights still held as a plain float tensor (not quantized)."""
    parameters = dict(model.named_parameters())
    return [
        name for name in names if name in parameters and type(parameters[name].data) is torch.Tensor
    ]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_int8_ptq_quantizes_every_block_weight(arch: str, tmp_path: Path) -> None:
    model = tiny_classifier(arch)
    names = block_weight_names(arch, model)
    batch = tiny_batch(arch)
    before = logits(model, batch)
    result = quantize_dynamic_int8(model, backend="torchao")
    assert result.block_weight_share == 1.0
    assert _float_block_weights(model, names) == []
    # each expected matrix is now an int8 tensor subclass: counted here from the modules
    modules = dict(model.named_modules())
    for name in names:
        weight = modules[name.removesuffix(".weight")].weight
        assert type(weight.data) is not torch.Tensor, name
    after = logits(model, batch)
    assert not torch.equal(after, before)  # the arithmetic changed ...
    assert torch.allclose(after, before, atol=0.05)  # ... by int8 rounding only
    if arch == "gpt2":
        with pytest.raises(ValueError, match="Conv1D"):
            save_quantized(model, tmp_path / "q")
        return
    save_quantized(model, tmp_path / "q")
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "q")
    assert torch.equal(logits(reloaded, batch).argmax(-1), after.argmax(-1))
    assert torch.allclose(logits(reloaded, batch), after, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_int8_qat_fake_quantizes_and_converts_every_block_weight(arch: str) -> None:
    from torchao.quantization.qat import FakeQuantizedLinear

    model = tiny_classifier(arch)
    names = block_weight_names(arch, model)
    batch = tiny_batch(arch)
    before = logits(model, batch)
    weights_before = {n: p for n, p in model.named_parameters() if n in names}
    prepare_qat(model)
    modules = dict(model.named_modules())
    for name in names:
        module = modules[name.removesuffix(".weight")]
        assert isinstance(module, FakeQuantizedLinear), name
        assert module.weight is weights_before[name]  # the optimizer's Parameter objects survive
    assert block_weight_share(model) == 1.0
    fake = logits(model, batch)
    assert torch.allclose(fake, before, atol=0.05) and not torch.equal(fake, before)
    result = convert_qat(model)
    assert result.block_weight_share == 1.0
    assert _float_block_weights(model, names) == []
    assert torch.allclose(logits(model, batch), fake, atol=0.05)


def test_int8_refuses_a_model_whose_layers_it_cannot_quantize() -> None:
    from torch import nn

    class Gate(nn.Module):  # a matrix the quantizer has no kernel for
        def __init__(self) -> None:
            super().__init__()
            self.matrix = nn.Parameter(torch.randn(32, 32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.matrix

    model = tiny_classifier("bert")
    model.bert.encoder.layer[0].gate = Gate()
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.0\.gate.*refusing"):
        quantize_dynamic_int8(model)
    # nothing was changed: every Linear is still float
    assert all(
        type(m.weight.data) is torch.Tensor for m in model.modules() if isinstance(m, nn.Linear)
    )
    assert math.isclose(block_weight_share(model), 0.0)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_int8_torch_ao_backend_states_the_share_it_quantized(arch: str) -> None:
    model = tiny_classifier(arch)
    batch = tiny_batch(arch)
    before = logits(model, batch)
    result = quantize_dynamic_int8(model, backend="torch.ao")
    assert result.block_weight_share == 1.0
    names = {n.removesuffix(".weight") for n in block_weight_names(arch, tiny_classifier(arch))}
    modules = dict(model.named_modules())
    assert all(type(modules[n]).__module__.startswith("torch.ao.nn.quantized") for n in names)
    assert torch.allclose(logits(model, batch), before, atol=0.05)
