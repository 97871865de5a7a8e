"""loyalkit's int8 for CPU deployment: OpenVINO + NNCF export, reload, Trainer, errors."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from scipy.special import softmax
from sklearn.metrics import log_loss, mean_squared_error
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    Trainer,
    TrainingArguments,
)

from loyalkit.compression import (
    OpenVINOInt8Classifier,
    export_int8,
    is_openvino_int8,
    prepare_qat,
    strip_fake_quantization,
)
from loyalkit.logits import model_logits

VOCAB = 120


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bert(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=num_labels,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def batches(count: int = 4, rows: int = 8, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Padded batches of different lengths: real tokens, then zeros with a 0 attention mask."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for index in range(count):
        length = 6 + 3 * index
        ids = torch.randint(1, VOCAB, (rows, length), generator=generator)
        mask = torch.ones(rows, length, dtype=torch.long)
        mask[::2, length - 2 :] = 0
        ids[mask == 0] = 0
        made.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        )
    return made


def int8_shapes(folder: Path) -> list[str]:
    """Shapes of the int8 constants in the IR's XML."""
    xml = (folder / "openvino_model.xml").read_text(encoding="utf-8")
    return re.findall(r'element_type="i8" shape="([0-9, ]+)"', xml)


def test_every_linear_weight_is_stored_int8(tmp_path: Path) -> None:
    model = bert()
    export = export_int8(model, tmp_path, batches())
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert export.quantized_matmuls == len(linears) == 2 * 6 + 2
    shapes = int8_shapes(tmp_path)
    for linear in linears:  # each weight [out, in] appears as an int8 constant
        assert f"{linear.out_features}, {linear.in_features}" in shapes
    assert is_openvino_int8(tmp_path)


def test_int8_logits_close_to_float_and_not_equal(tmp_path: Path) -> None:
    model = bert()
    data = batches()
    export_int8(model, tmp_path, data)
    int8 = OpenVINOInt8Classifier.from_pretrained(tmp_path)
    for batch in data:
        with torch.no_grad():
            expected = model(**batch).logits
        got = int8(**batch).logits
        assert got.dtype == torch.float32 and got.shape == expected.shape
        scale = expected.abs().max().item()
        assert (got - expected).abs().max().item() < 0.1 * scale + 1e-3
    assert not torch.equal(int8(**data[0]).logits, model(**data[0]).logits)


def test_reload_and_save_pretrained_give_identical_predictions(tmp_path: Path) -> None:
    data = batches()
    export_int8(bert(), tmp_path / "a", data)
    first = OpenVINOInt8Classifier.from_pretrained(tmp_path / "a")
    first.save_pretrained(tmp_path / "b")
    second = OpenVINOInt8Classifier.from_pretrained(tmp_path / "b")
    for batch in data:
        assert torch.equal(first(**batch).logits, second(**batch).logits)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "config.json", "openvino_model.bin", "openvino_model.xml",
    ]  # fmt: skip


def test_float_model_left_unchanged(tmp_path: Path) -> None:
    model = bert()
    before = copy.deepcopy(model.state_dict())
    model.train()
    export_int8(model, tmp_path, batches())
    assert model.training  # its mode restored
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def _dataset(data: list[dict[str, torch.Tensor]], labels: list[Any]) -> Dataset:
    batch = data[0]
    return Dataset.from_dict(
        {
            "input_ids": batch["input_ids"].tolist(),
            "attention_mask": batch["attention_mask"].tolist(),
            "token_type_ids": batch["token_type_ids"].tolist(),
            "labels": labels,
        }
    )


def _trainer(model: nn.Module, tmp_path: Path) -> Trainer:
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_eval_batch_size=8, report_to=[]
    )
    return Trainer(model=model, args=arguments)


def test_trainer_predict_and_evaluate(tmp_path: Path) -> None:
    data = batches()
    export_int8(bert(), tmp_path / "int8", data)
    model = OpenVINOInt8Classifier.from_pretrained(tmp_path / "int8")
    labels = [0, 1, 1, 0, 1, 0, 0, 1]
    dataset = _dataset(data, labels)
    trainer = _trainer(model, tmp_path)
    predicted = trainer.predict(dataset)
    logits = model(**data[0]).logits.numpy()
    np.testing.assert_array_equal(predicted.predictions, logits)
    expected_loss = log_loss(labels, softmax(logits.astype(np.float64), axis=1), labels=[0, 1])
    assert predicted.metrics["test_loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert trainer.evaluate(dataset)["eval_loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_regression_loss(tmp_path: Path) -> None:
    data = batches()
    export_int8(bert(num_labels=1), tmp_path / "int8", data)
    model = OpenVINOInt8Classifier.from_pretrained(tmp_path / "int8")
    targets = [0.5, -1.0, 2.0, 0.0, 1.5, 0.25, -0.5, 1.0]
    output = model(**data[0], labels=torch.tensor(targets))
    expected = mean_squared_error(targets, output.logits.squeeze(-1).numpy())
    assert output.loss.item() == pytest.approx(expected, rel=1e-5)


def test_model_without_token_type_ids(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=3
    )
    model = DistilBertForSequenceClassification(config).eval()
    data = [{k: v for k, v in b.items() if k != "token_type_ids"} for b in batches()]
    export = export_int8(model, tmp_path, data)
    assert export.input_names == ("input_ids", "attention_mask")
    assert (
        export.quantized_matmuls == 2 * 6 + 2
    )  # q, k, v, out, ffn x2 per layer; pre-classifier, classifier
    int8 = OpenVINOInt8Classifier.from_pretrained(tmp_path)
    assert int8(**data[1]).logits.shape == (8, 3)


def test_follows_torch_thread_count(tmp_path: Path) -> None:
    data = batches()
    export_int8(bert(), tmp_path, data)
    model = OpenVINOInt8Classifier.from_pretrained(tmp_path)
    one = model(**data[0]).logits
    torch.set_num_threads(2)
    assert torch.equal(model(**data[0]).logits, one)
    assert model_logits(model, data[:1]).shape == (8, 2)  # no parameters: runs on the CPU


def test_strip_fake_quantization_restores_the_float_model() -> None:
    model = bert()
    reference = copy.deepcopy(model)
    prepare_qat(model)
    batch = batches()[0]
    with torch.no_grad():
        assert not torch.equal(model(**batch).logits, reference(**batch).logits)
        assert strip_fake_quantization(model) == 2 * 6 + 2
        assert torch.equal(model(**batch).logits, reference(**batch).logits)
    with pytest.raises(ValueError, match="no fake-quantized layers"):
        strip_fake_quantization(model)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration: no batches"):
        export_int8(bert(), tmp_path, [])
    with pytest.raises(ValueError, match="`max_rows` must be a positive int"):
        export_int8(bert(), tmp_path, batches(), max_rows=0)
    with pytest.raises(ValueError, match="calibration: each batch must hold `input_ids`"):
        export_int8(bert(), tmp_path, [{"attention_mask": torch.ones(2, 3, dtype=torch.long)}])
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        export_int8("bert", tmp_path, batches())  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="`folder`: no openvino_model.xml"):
        OpenVINOInt8Classifier.from_pretrained(tmp_path / "missing")
    export_int8(bert(), tmp_path / "ok", batches())
    with pytest.raises(ValueError, match="`threads` must be a positive int or None"):
        OpenVINOInt8Classifier.from_pretrained(tmp_path / "ok", threads=0)
