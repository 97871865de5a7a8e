"""int8 quantization (post-training and quantization-aware) of tiny BERTs, checked against numpy."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from packaging import version
from safetensors import safe_open
from sklearn.metrics import accuracy_score
from tiny_bert import tiny_bert
from torch import nn
from trainer_helpers import TrainingRecorder, plain_trainer, training_args
from transformers import AutoModelForSequenceClassification

from loyalkit.callbacks.quantization import (
    PostTrainingQuantizationCallback,
    QuantizationAwareTrainingCallback,
)
from loyalkit.compression.quantization import (
    convert_qat,
    is_fake_quantized,
    prepare_qat,
    quantize_dynamic_int8,
    save_quantized,
    supports_safetensors,
)

EPS = np.finfo(np.float32).eps
# transformers 5 saves torchao int8 weights as safetensors; 4.57 only as a pickle (its torchao
# quantizer allows safetensors for Float8 configs alone).
INT8_WEIGHTS = (
    "model.safetensors"
    if version.parse(transformers.__version__).major >= 5
    else "pytorch_model.bin"
)


def token_ids(n: int = 64, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(5, 200, (n, length), generator=torch.Generator().manual_seed(seed))


def logits(model: nn.Module, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=ids).logits.numpy()


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def symmetric_int8(values: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 rounding as torchao and torch.ao define it (read in their sources).

    scale = max|x| / 127.5 (the range [-128, 127] spans 255 steps), at least float32 eps; torchao
    rounds ``x * (1 / scale)`` half to even, in float32, and clamps to [-128, 127].
    """
    values = values.astype(np.float32)
    scale = np.maximum(np.abs(values).max(axis=axis, keepdims=True) / np.float32(127.5), EPS)
    scale = scale.astype(np.float32)
    return np.clip(np.rint(values * (np.float32(1.0) / scale)), -128, 127), scale


def test_torchao_weights_are_per_channel_symmetric_int8() -> None:
    model = tiny_bert(seed=0)
    fp32 = {name: m.weight.detach().numpy().copy() for name, m in linear_layers(model).items()}
    result = quantize_dynamic_int8(model, backend="torchao")
    assert result.backend == "torchao" and result.quantized_layers == len(fp32) == 14
    for name, module in linear_layers(model).items():
        expected, scale = symmetric_int8(fp32[name], axis=1)
        np.testing.assert_array_equal(module.weight.qdata.numpy(), expected, err_msg=name)
        np.testing.assert_allclose(module.weight.scale.numpy(), scale, rtol=1e-6, err_msg=name)


def test_torchao_linear_matches_numpy_int8_arithmetic() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    weight, bias = layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
    x = torch.randn(5, 16)
    quantize_dynamic_int8(layer)
    with torch.no_grad():
        got = layer(x).numpy()
    # Activations: symmetric per row (token); weights: symmetric per output channel.
    q_x, s_x = symmetric_int8(x.numpy(), axis=1)
    q_w, s_w = symmetric_int8(weight, axis=1)
    expected = (q_x.astype(np.int64) @ q_w.astype(np.int64).T) * s_x * s_w.T + bias
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_torch_ao_weights_are_per_channel_symmetric_int8() -> None:
    model = tiny_bert(seed=0)
    fp32 = {name: m.weight.detach().numpy().copy() for name, m in linear_layers(model).items()}
    result = quantize_dynamic_int8(model, backend="torch.ao")
    assert result.backend == "torch.ao" and result.quantized_layers == 14
    quantized = {n: m for n, m in model.named_modules() if type(m).__name__ == "Linear"}
    assert set(quantized) == set(fp32)
    for name, module in quantized.items():
        weight = module.weight()
        assert weight.dtype == torch.qint8 and weight.q_per_channel_axis() == 0
        assert not weight.q_per_channel_zero_points().any()
        expected, scale = symmetric_int8(fp32[name], axis=1)
        np.testing.assert_array_equal(weight.int_repr().numpy(), expected, err_msg=name)
        np.testing.assert_allclose(weight.q_per_channel_scales().numpy(), scale.ravel(), rtol=1e-6)


@pytest.mark.parametrize("backend", ["torchao", "torch.ao"])
def test_int8_model_stays_close_to_fp32(backend: str) -> None:
    model, ids = tiny_bert(seed=0), token_ids()
    reference = logits(model, ids)
    quantize_dynamic_int8(model, backend=backend)  # type: ignore[arg-type]
    quantized = logits(model, ids)
    assert not np.array_equal(quantized, reference)
    # The tiny random BERT's logits span about +-0.05: int8 error stays within 5% of that.
    assert np.abs(quantized - reference).max() < 0.05 * np.abs(reference).max()
    agreement = accuracy_score(reference.argmax(axis=1), quantized.argmax(axis=1))
    assert agreement >= 0.95


def test_auto_falls_back_to_torch_ao_without_torchao(monkeypatch: pytest.MonkeyPatch) -> None:
    model, ids = tiny_bert(seed=0), token_ids()
    reference = logits(model, ids)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import now fails
    with pytest.warns(RuntimeWarning, match="using torch.ao.quantization"):
        result = quantize_dynamic_int8(model)
    assert result.backend == "torch.ao"
    assert "ModuleNotFoundError" in (result.fallback_reason or "")
    assert np.abs(logits(model, ids) - reference).max() < 0.05 * np.abs(reference).max()


def test_fallback_undoes_a_partial_torchao_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchao.quantization

    real_quantize = torchao.quantization.quantize_

    def fails_after_first_layer(model: nn.Module, config: Any, filter_fn: Any = None) -> None:
        first = next(m for n, m in model.named_modules() if filter_fn(m, n))
        real_quantize(first, config, filter_fn=lambda m, _: m is first)
        raise RuntimeError("kernel missing")

    monkeypatch.setattr(torchao.quantization, "quantize_", fails_after_first_layer)
    model = tiny_bert(seed=0)
    with pytest.warns(RuntimeWarning, match="kernel missing"):
        result = quantize_dynamic_int8(model)
    assert result.backend == "torch.ao"
    # Every layer, the first included, ends up a torch.ao dynamic Linear over fp32 weights.
    dynamic = [m for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(dynamic) == 14
    assert all(m.weight().dtype == torch.qint8 for m in dynamic)


def weights_files(folder: Path) -> list[str]:
    """Which of the two weight files ``save_pretrained`` can write are in ``folder``."""
    return [name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).exists()]


def tensor_bytes(weights: Path) -> int:
    """Bytes of the tensors in a weights file; a torchao tensor counts its inner tensors."""
    if weights.suffix == ".safetensors":
        with safe_open(str(weights), framework="pt") as f:
            return sum(f.get_tensor(k).nbytes for k in f.keys())  # noqa: SIM118 (not a dict)
    total = 0
    for tensor in torch.load(weights, weights_only=True).values():
        if hasattr(tensor, "__tensor_flatten__"):  # torchao Int8Tensor: qdata, scale, zero_point
            total += sum(getattr(tensor, name).nbytes for name in tensor.__tensor_flatten__()[0])
        else:
            total += tensor.nbytes
    return total


def test_save_pretrained_round_trip_and_size(tmp_path: Path) -> None:
    model, ids = tiny_bert(seed=0), token_ids()
    model.save_pretrained(tmp_path / "fp32")
    linear_bytes = sum(m.weight.numel() * 4 for m in linear_layers(model).values())
    quantize_dynamic_int8(model)
    before = logits(model, ids)
    save_quantized(model, tmp_path / "int8")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8").eval()
    assert type(reloaded.classifier.weight).__name__ == "Int8Tensor"
    assert reloaded.config.quantization_config.quant_method == "torchao"
    np.testing.assert_array_equal(logits(reloaded, ids), before)
    assert weights_files(tmp_path / "fp32") == ["model.safetensors"]
    assert weights_files(tmp_path / "int8") == [INT8_WEIGHTS]
    assert supports_safetensors(model) == (INT8_WEIGHTS == "model.safetensors")
    fp32_size = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    int8_size = (tmp_path / "int8" / INT8_WEIGHTS).stat().st_size
    assert int8_size < fp32_size
    # Tensor bytes: each Linear weight keeps 1 byte of 4, plus an fp32 scale and an int8 zero
    # point per output row; the rest of the file is a header (safetensors: about 11 kB of JSON).
    rows = sum(m.out_features for m in linear_layers(model).values())
    fp32_bytes = tensor_bytes(tmp_path / "fp32" / "model.safetensors")
    saving = fp32_bytes - tensor_bytes(tmp_path / "int8" / INT8_WEIGHTS)
    assert saving == 3 * linear_bytes // 4 - 5 * rows


def test_fake_quantization_simulates_the_int8_model() -> None:
    model, ids = tiny_bert(seed=0), token_ids()
    fake = copy.deepcopy(model)
    assert prepare_qat(fake) == 14 and is_fake_quantized(fake)
    ptq = copy.deepcopy(model)
    quantize_dynamic_int8(ptq, symmetric_activations=False)
    reference, fake_out, int8_out = logits(model, ids), logits(fake, ids), logits(ptq, ids)
    assert np.abs(fake_out - reference).max() > 1e-5  # fake quantization is active
    # Same integer grid computed in float vs in int8: only float rounding differs.
    np.testing.assert_allclose(fake_out, int8_out, atol=1e-6)
    layer = fake.bert.encoder.layer[0].attention.self.query
    weight = layer.weight.detach().numpy()
    q_w, s_w = symmetric_int8(weight, axis=1)
    with torch.no_grad():
        fake_weight = layer.weight_fake_quantizer(layer.weight).numpy()
    np.testing.assert_allclose(fake_weight, q_w * s_w, rtol=1e-6, atol=1e-9)


def test_qat_trains_with_an_optimizer_built_before_prepare() -> None:
    model = tiny_bert(seed=0).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    prepare_qat(model)
    fake_layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(m.weight) in optimized for m in fake_layers)
    ids, labels = token_ids(16), torch.arange(16) % 2
    for _ in range(3):
        loss = model(input_ids=ids, labels=labels).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, param in model.named_parameters():
        if "attention.self.query.weight" in name:
            assert not torch.equal(param.detach(), start[name]), name


def test_convert_qat_equals_ptq_of_the_trained_weights() -> None:
    model = tiny_bert(seed=0)
    prepare_qat(model)
    with torch.no_grad():  # stand-in for training: move the latent weights
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    fresh = tiny_bert(seed=5)
    fresh.load_state_dict(model.state_dict())  # the same names as a float model
    quantize_dynamic_int8(fresh, symmetric_activations=False)
    assert convert_qat(model).quantized_layers == 14 and not is_fake_quantized(model)
    ids = token_ids()
    np.testing.assert_array_equal(logits(model, ids), logits(fresh, ids))


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="`model`"):
        quantize_dynamic_int8("bert")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`backend`"):
        quantize_dynamic_int8(nn.Linear(2, 2), backend="fbgemm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`backend`"):
        PostTrainingQuantizationCallback(backend="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prepare_qat"):
        convert_qat(nn.Linear(2, 2))
    torch_ao_model = tiny_bert(seed=0)
    quantize_dynamic_int8(torch_ao_model, backend="torch.ao")
    with pytest.raises(ValueError, match="torch.ao models cannot be saved"):
        save_quantized(torch_ao_model, "unused")
    prepared = nn.Sequential(nn.Linear(2, 2))
    prepare_qat(prepared)
    with pytest.raises(ValueError, match="already prepared"):
        prepare_qat(prepared)


class Probe(TrainingRecorder):
    """Listed before the quantization callback: sees the model just before it is converted."""

    def __init__(self, ids: torch.Tensor) -> None:
        super().__init__({"input_ids": ids})
        self.fake_at_step: list[bool] = []
        self.latent_state: dict[str, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.fake_at_step.append(is_fake_quantized(model))

    def on_train_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.latent_state = {k: v.clone() for k, v in model.state_dict().items()}


def test_post_training_quantization_callback(sentiment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ptq = PostTrainingQuantizationCallback()
    trainer = plain_trainer(
        sentiment,
        tiny_bert(seed=0).train(),
        training_args(tmp_path),
        [ptq],
        eval_dataset=sentiment[1],
    )
    trainer.train()
    assert ptq.result is not None and ptq.result.backend == "torchao"
    assert all(
        type(m.weight).__name__ == "Int8Tensor" for m in linear_layers(trainer.model).values()
    )
    assert np.isfinite(trainer.evaluate()["eval_loss"])
    ids = token_ids()
    trainer.save_model(str(tmp_path / "final"))  # the same call on transformers 5 and 4.57
    assert weights_files(tmp_path / "final") == [INT8_WEIGHTS]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    assert type(reloaded.classifier.weight).__name__ == "Int8Tensor"
    np.testing.assert_array_equal(logits(reloaded, ids), logits(trainer.model.eval(), ids))


def test_quantization_aware_training_callback(sentiment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = token_ids()
    probe, qat = Probe(ids), QuantizationAwareTrainingCallback()
    model = tiny_bert(seed=0).train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    args = training_args(tmp_path, save_strategy="steps", save_steps=2)
    trainer = plain_trainer(sentiment, model, args, [probe, qat])
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert probe.fake_at_step == [True] * 4
    moved = [
        k for k in start if "encoder" in k and not torch.equal(start[k], probe.latent_state[k])
    ]
    assert len(moved) > 20
    assert qat.result is not None and not is_fake_quantized(trainer.model)
    # The converted model is the int8 PTQ of the final latent weights.
    ptq = tiny_bert(seed=0)
    ptq.load_state_dict(probe.latent_state)
    quantize_dynamic_int8(ptq, symmetric_activations=False)
    np.testing.assert_array_equal(logits(trainer.model.eval(), ids), logits(ptq, ids))
    # A mid-run checkpoint holds the latent float weights: prepare_qat restores its predictions.
    checkpoint = AutoModelForSequenceClassification.from_pretrained(tmp_path / "checkpoint-2")
    prepare_qat(checkpoint.eval())
    np.testing.assert_allclose(logits(checkpoint, ids), probe.saved[2].numpy(), atol=1e-6)
    # The converted model saves and reloads as int8 (a pickle on transformers 4.57).
    trainer.save_model(str(tmp_path / "final"))
    assert weights_files(tmp_path / "final") == [INT8_WEIGHTS]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    np.testing.assert_array_equal(logits(reloaded, ids), logits(ptq, ids))


def test_ptq_and_qat_callbacks_conflict(sentiment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for callbacks in (
        [QuantizationAwareTrainingCallback(), PostTrainingQuantizationCallback()],
        [PostTrainingQuantizationCallback(), QuantizationAwareTrainingCallback()],
    ):
        args = training_args(tmp_path, max_steps=1)
        trainer = plain_trainer(sentiment, tiny_bert(seed=0).train(), args, callbacks)
        with pytest.raises(ValueError, match="conflict"):
            trainer.train()
