"""Compression callbacks combined in one plain ``Trainer``, and the combinations that must fail.

Real ``Trainer.train()`` runs of a few steps on tiny local BERTs. Each effect of a combination is
checked against an independent reference: the optimised loss against the distillation objective
written out by hand (softmax/log in float64) from the logits the student really produced and the
teacher's own logits; sparsity against a numpy count of zeros; loyalty against
``scipy.spatial.distance.jensenshannon`` and ``sklearn.metrics.accuracy_score``; the exported
int8 successor against a fresh 2-layer model loaded with the trained float weights and quantized
on its own.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trainer_helpers
from datasets import Dataset
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import accuracy_score
from tiny_bert import (
    fit_full_batch,
    tiny_bert,
    tiny_bert_config,
    tiny_sentiment_dataset,
    tiny_tokenizer,
)
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)

from loyalkit.callbacks import (
    DistillationCallback,
    HeadPruningCallback,
    LoyaltyCallback,
    MagnitudePruningCallback,
    ModuleReplacementCallback,
    OpenVINOInt8ExportCallback,
    PostTrainingQuantizationCallback,
    QuantizationAwareTrainingCallback,
)
from loyalkit.callbacks.conflicts import Change, conflict, register_callback
from loyalkit.compression import (
    ConstantReplacementSchedule,
    CubicSchedule,
    DistillationConfig,
    Distiller,
    LinearSchedule,
    OneShotSchedule,
    prepare_module_replacement,
    prunable_weights,
    quantize_dynamic_int8,
    remaining_heads,
)
from loyalkit.compression.quantization import is_fake_quantized

TEMPERATURE, ALPHA = 2.0, 0.5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return {
        "tokenizer": tokenizer,
        "train": tiny_sentiment_dataset(tokenizer, n=48, seed=0),
        "eval": random_token_dataset(n=40, length=10, seed=3),
    }


def random_token_dataset(n: int, length: int, seed: int) -> Dataset:
    """Random word sequences with random labels: the teacher is unsure, students disagree."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 140, (n, length), generator=generator)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    return Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "token_type_ids": torch.zeros_like(ids).tolist(),
            "attention_mask": torch.ones_like(ids).tolist(),
            "labels": torch.randint(0, 2, (n,), generator=generator).tolist(),
        }
    )


def padded(tokenizer: Any, dataset: Any) -> dict[str, torch.Tensor]:
    """The whole set in one batch, padded as the Trainer's collator pads a batch of it."""
    columns = ["input_ids", "token_type_ids", "attention_mask"]
    return tokenizer.pad([{k: row[k] for k in columns} for row in dataset], return_tensors="pt")


@pytest.fixture(scope="module")
def teacher(data: dict[str, Any]) -> nn.Module:
    """A 4-layer tiny BERT fitted to the sentiment task, so students can disagree with it."""
    torch.set_num_threads(1)
    batch = padded(data["tokenizer"], data["train"])
    return fit_full_batch(tiny_bert(num_layers=4, seed=1), batch, data["train"]["labels"], 30)


def logits_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(**batch).logits.float().numpy()
    model.train(was_training)
    return out


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    """The shared four-step run, evaluating every two steps with the whole eval set in one batch."""
    settings: dict[str, Any] = dict(
        per_device_eval_batch_size=40,  # the whole eval set in one batch, as `padded` gives it
        eval_strategy="steps",
        eval_steps=2,
        data_seed=0,
    )
    settings.update(overrides)
    return trainer_helpers.training_args(output_dir, **settings)


def make_trainer(data: dict[str, Any], model: nn.Module, args: Any, callbacks: list) -> Trainer:
    return Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        processing_class=data["tokenizer"],
        callbacks=callbacks,
    )


class TrainingForwards(TrainerCallback):
    """Records each training forward: inputs, student logits and the loss the Trainer receives.

    Listed after DistillationCallback, its hook runs after the distillation hook, so it sees the
    loss the Trainer back-propagates.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._handle: Any = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self._handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, outputs):  # type: ignore[no-untyped-def]
        if module.training:
            self.records.append(
                {
                    "inputs": {
                        k: v.detach().clone() for k, v in kwargs.items() if torch.is_tensor(v)
                    },
                    "logits": outputs.logits.detach().clone(),
                    "loss": float(outputs.loss.detach()),
                }
            )

    def on_train_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._handle.remove()


class Evaluations(TrainerCallback):
    """At each evaluation: the student's logits on the eval set, run here in one padded batch."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch
        self.logits: dict[int, np.ndarray] = {}
        self.fake_quantized: dict[int, bool] = {}

    def on_evaluate(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.logits[state.global_step] = logits_of(model, self.batch)
        self.fake_quantized[state.global_step] = is_fake_quantized(model)


class FinalWeights(TrainerCallback):
    """The model's state at train end, as the callbacks listed before this one left it."""

    state_dict: dict[str, torch.Tensor]

    def on_train_end(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        self.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}


def kd_loss_by_hand(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> float:
    """alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE, batch mean, in float64."""
    p_teacher = torch.softmax(teacher.double() / TEMPERATURE, dim=1)
    log_p_student = torch.log_softmax(student.double() / TEMPERATURE, dim=1)
    kl = (p_teacher * (p_teacher.log() - log_p_student)).sum(dim=1)
    ce = -torch.log_softmax(student.double(), dim=1)[torch.arange(len(labels)), labels]
    return float((ALPHA * TEMPERATURE**2 * kl + (1 - ALPHA) * ce).mean())


def check_kd_loss_was_optimised(
    forwards: TrainingForwards, teacher: nn.Module, log_history: list[dict[str, Any]]
) -> None:
    train_logs = [entry for entry in log_history if "loss" in entry]
    assert len(forwards.records) == len(train_logs) > 0
    for record, log in zip(forwards.records, train_logs, strict=True):
        inputs = record["inputs"]
        teacher_inputs = {
            k: inputs[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in inputs
        }
        with torch.no_grad():
            teacher_logits = teacher.eval()(**teacher_inputs).logits
        expected = kd_loss_by_hand(record["logits"], teacher_logits, inputs["labels"])
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
        assert log["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-4)
        # Not the student's own cross-entropy: the teacher really is in the loss.
        own = float(nn.functional.cross_entropy(record["logits"].double(), inputs["labels"]))
        assert abs(own - expected) > 1e-3


def loyalty_by_hand(student: np.ndarray, teacher: np.ndarray) -> dict[str, float]:
    teacher, student = teacher.astype(np.float64), student.astype(np.float64)
    distance = jensenshannon(softmax(teacher, axis=1), softmax(student, axis=1), axis=1)
    return {
        "label_loyalty": accuracy_score(teacher.argmax(axis=1), student.argmax(axis=1)),
        "probability_loyalty": float(np.mean(1.0 - distance)),
    }


def check_loyalty(metrics: dict[str, Any], student: np.ndarray, teacher: np.ndarray) -> None:
    expected = loyalty_by_hand(student, teacher)
    assert metrics["eval_label_loyalty"] == pytest.approx(expected["label_loyalty"], abs=1e-12)
    assert metrics["eval_probability_loyalty"] == pytest.approx(
        expected["probability_loyalty"], rel=1e-5
    )


def linear_weight_types(model: nn.Module) -> set[str]:
    return {type(m.weight).__name__ for m in model.modules() if isinstance(m, nn.Linear)}


def test_distillation_module_replacement_qat_and_loyalty(data, teacher, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eval_batch = padded(data["tokenizer"], data["eval"])
    teacher_eval = logits_of(teacher, eval_batch)
    student = copy.deepcopy(teacher).train()
    prepare_module_replacement(student, num_successor_layers=2)  # before the Trainer's optimizer
    export_dir = tmp_path / "successor"
    forwards, evaluations, latent = TrainingForwards(), Evaluations(eval_batch), FinalWeights()
    callbacks = [
        DistillationCallback(teacher, temperature=TEMPERATURE, alpha=ALPHA),
        forwards,
        latent,  # before QAT: sees the trained float ("latent") weights
        QuantizationAwareTrainingCallback(),
        ModuleReplacementCallback(
            ConstantReplacementSchedule(rate=0.5, replacing_steps=2), export_dir=str(export_dir)
        ),
        evaluations,
    ]
    trainer = make_trainer(data, student, training_args(tmp_path / "run"), callbacks)
    LoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    history = trainer.state.log_history

    # KD: every step optimised the distillation loss of the logits the student produced.
    check_kd_loss_was_optimised(forwards, teacher, history)
    rates = [entry["replacement_rate"] for entry in history if "loss" in entry]
    assert rates == [0.5, 0.5, 1.0, 1.0]

    # Loyalty at each evaluation during training (fake-quantized successor path) = scipy/sklearn.
    evals = [entry for entry in history if "eval_label_loyalty" in entry]
    assert [entry["step"] for entry in evals] == [2, 4]
    for entry in evals:
        assert evaluations.fake_quantized[entry["step"]]
        check_loyalty(entry, evaluations.logits[entry["step"]], teacher_eval)

    # QAT converted the whole model to int8 at the end.
    assert not is_fake_quantized(trainer.model)
    assert linear_weight_types(trainer.model) == {"Int8Tensor"}
    final_metrics = trainer.evaluate()
    final_logits = logits_of(trainer.model, eval_batch)
    check_loyalty(final_metrics, final_logits, teacher_eval)

    # The exported successor: a plain 2-layer model, int8, predicting as the trained model does.
    exported = AutoModelForSequenceClassification.from_pretrained(export_dir).eval()
    assert exported.config.num_hidden_layers == len(exported.bert.encoder.layer) == 2
    assert linear_weight_types(exported) == {"Int8Tensor"}
    exported_logits = logits_of(exported, eval_batch)
    np.testing.assert_array_equal(exported_logits, final_logits)
    # ... and as a fresh 2-layer model given the trained float successor weights, then quantized
    # as QAT simulated (asymmetric per-token activations).
    reference = BertForSequenceClassification(tiny_bert_config(num_layers=2))
    float_successor = {k: v for k, v in latent.state_dict.items() if ".layer.predecessor." not in k}
    reference.load_state_dict(float_successor, strict=True)
    float_logits = logits_of(reference, eval_batch)
    quantize_dynamic_int8(reference.eval(), symmetric_activations=False)
    np.testing.assert_array_equal(logits_of(reference, eval_batch), exported_logits)
    # Sensible: int8 stays close to the float successor it came from.
    assert np.abs(exported_logits - float_logits).max() < 0.05 * np.abs(float_logits).max()
    assert accuracy_score(float_logits.argmax(1), exported_logits.argmax(1)) >= 0.9


def zero_counts(model: nn.Module) -> dict[str, int]:
    """Zeros of each encoder Linear weight, counted in numpy on the state dict."""
    state = model.state_dict()
    return {name: int((state[name].numpy() == 0).sum()) for name in prunable_weights(model)}


def test_distillation_magnitude_pruning_and_loyalty(data, teacher, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eval_batch = padded(data["tokenizer"], data["eval"])
    teacher_eval = logits_of(teacher, eval_batch)
    student = tiny_bert(num_layers=2, seed=2).train()
    # s(t) by hand: 0 up to t=2, 0.5 - 0.5 * 0.5**3 = 0.4375 for t in {3, 4}, 0.5 from t=5 on.
    schedule = CubicSchedule(target_sparsity=0.5, start_step=1, end_step=5, frequency=2)
    forwards, evaluations = TrainingForwards(), Evaluations(eval_batch)
    callbacks = [
        MagnitudePruningCallback(schedule, scope="layer"),
        DistillationCallback(teacher, temperature=TEMPERATURE, alpha=ALPHA),
        forwards,
        evaluations,
    ]
    trainer = make_trainer(data, student, training_args(tmp_path, max_steps=6), callbacks)
    LoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    history = trainer.state.log_history

    check_kd_loss_was_optimised(forwards, teacher, history)
    train_logs = [entry for entry in history if "loss" in entry]
    assert [e["pruning_schedule_sparsity"] for e in train_logs] == [0, 0, 0.4375, 0.4375, 0.5, 0.5]

    # The target reached exactly: round(0.5 * numel) zeros in every encoder Linear weight.
    zeros = zero_counts(trainer.model)
    assert len(zeros) == 12
    state = trainer.model.state_dict()
    assert zeros == {name: round(0.5 * state[name].numel()) for name in zeros}
    assert train_logs[-1]["sparsity"] == sum(zeros.values()) / sum(
        state[name].numel() for name in zeros
    )

    evals = [entry for entry in history if "eval_label_loyalty" in entry]
    assert [entry["step"] for entry in evals] == [2, 4, 6]
    for entry in evals:
        check_loyalty(entry, evaluations.logits[entry["step"]], teacher_eval)


def test_pruning_masks_survive_qat_conversion(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    latent = FinalWeights()
    callbacks = [
        MagnitudePruningCallback(OneShotSchedule(target_sparsity=0.5), scope="global"),
        latent,
        QuantizationAwareTrainingCallback(),
    ]
    model = tiny_bert(num_layers=2, seed=0).train()
    trainer = make_trainer(data, model, training_args(tmp_path, eval_strategy="no"), callbacks)
    trainer.train()
    assert linear_weight_types(trainer.model) == {"Int8Tensor"}
    weights = prunable_weights(trainer.model)
    pruned = {name: latent.state_dict[name].numpy() == 0 for name in weights}
    assert sum(int(mask.sum()) for mask in pruned.values()) == round(
        0.5 * sum(mask.size for mask in pruned.values())
    )
    int8_zeros = {name: weight.qdata.numpy() == 0 for name, weight in weights.items()}
    for name in weights:  # every pruned weight is an int8 zero (small ones may round to 0 too)
        assert int8_zeros[name][pruned[name]].all(), name
    # An evaluation of the int8 model still logs the real sparsity (zeros of the int8 values).
    trainer.evaluate()
    total = sum(mask.size for mask in int8_zeros.values())
    expected = sum(int(mask.sum()) for mask in int8_zeros.values()) / total
    assert trainer.state.log_history[-1]["sparsity"] == pytest.approx(expected, abs=1e-12)
    assert expected >= 0.5


class StepCounter(TrainerCallback):
    steps = 0

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.steps += 1


def plain() -> nn.Module:
    return tiny_bert(num_layers=2, seed=0).train()


def prepared() -> nn.Module:
    model = tiny_bert(num_layers=4, seed=0).train()
    prepare_module_replacement(model, num_successor_layers=2)
    return model


def heads(**options: Any) -> HeadPruningCallback:
    return HeadPruningCallback({1: 0.25}, importance="magnitude", **options)


def mr() -> ModuleReplacementCallback:
    return ModuleReplacementCallback(ConstantReplacementSchedule(0.5), export_dir="unused")


def kd(**options: Any) -> DistillationCallback:
    return DistillationCallback(tiny_bert(num_layers=4, seed=5), **options)


HIDDEN = {"hidden_layer_map": {1: 2, 2: 4}}
QUERY = r".*attention\.self\.query"
CONFLICTS = {
    "two distillations": (plain, lambda: [kd(), kd()], "DistillationCallback and another Dist"),
    "two replacements": (prepared, lambda: [mr(), mr()], "ModuleReplacementCallback and another"),
    "two head prunings": (plain, lambda: [heads(), heads()], "HeadPruningCallback and another"),
    "two PTQ": (
        plain,
        lambda: [PostTrainingQuantizationCallback(), PostTrainingQuantizationCallback()],
        "PostTrainingQuantizationCallback and another PostTrainingQuantizationCallback",
    ),
    "two QAT": (
        plain,
        lambda: [QuantizationAwareTrainingCallback(), QuantizationAwareTrainingCallback()],
        "QuantizationAwareTrainingCallback and another QuantizationAwareTrainingCallback",
    ),
    "QAT then PTQ": (
        plain,
        lambda: [QuantizationAwareTrainingCallback(), PostTrainingQuantizationCallback()],
        "QuantizationAwareTrainingCallback and PostTrainingQuantizationCallback conflict",
    ),
    "PTQ then QAT": (
        plain,
        lambda: [PostTrainingQuantizationCallback(), QuantizationAwareTrainingCallback()],
        "PostTrainingQuantizationCallback and QuantizationAwareTrainingCallback conflict",
    ),
    "magnitude prunings over the same weights": (
        plain,
        lambda: [
            MagnitudePruningCallback(OneShotSchedule(0.5)),
            MagnitudePruningCallback(OneShotSchedule(0.3), module_pattern=QUERY),
        ],
        "MagnitudePruningCallback and another MagnitudePruningCallback conflict: both prune "
        "'bert.encoder.layer.0.attention.self.query.weight'",
    ),
    "magnitude then head pruning": (
        plain,
        lambda: [MagnitudePruningCallback(OneShotSchedule(0.5)), heads()],
        "MagnitudePruningCallback and HeadPruningCallback conflict: both prune the attention",
    ),
    "head then magnitude pruning": (
        plain,
        lambda: [
            heads(),
            MagnitudePruningCallback(LinearSchedule(0.5, 1, 3), module_pattern=QUERY),
        ],
        "HeadPruningCallback and MagnitudePruningCallback conflict: both prune the attention",
    ),
    "head removal and QAT": (
        plain,
        lambda: [heads(), QuantizationAwareTrainingCallback()],
        "HeadPruningCallback and QuantizationAwareTrainingCallback conflict.*remove_at_train_end",
    ),
    "PTQ and head removal": (
        plain,
        lambda: [PostTrainingQuantizationCallback(), heads()],
        "PostTrainingQuantizationCallback and HeadPruningCallback conflict",
    ),
    "head pruning under module replacement": (
        prepared,
        lambda: [mr(), heads()],
        "HeadPruningCallback conflicts with module replacement \\(ModuleReplacementCallback",
    ),
    "successor exported before QAT converts": (
        prepared,
        lambda: [mr(), QuantizationAwareTrainingCallback()],
        "ModuleReplacementCallback and QuantizationAwareTrainingCallback conflict.*list "
        "ModuleReplacementCallback after QuantizationAwareTrainingCallback",
    ),
    "successor exported before PTQ": (
        prepared,
        lambda: [mr(), PostTrainingQuantizationCallback()],
        "ModuleReplacementCallback and PostTrainingQuantizationCallback conflict",
    ),
    "successor export of a torch.ao model": (
        prepared,
        lambda: [PostTrainingQuantizationCallback(backend="torch.ao"), mr()],
        "PostTrainingQuantizationCallback and ModuleReplacementCallback conflict: a torch.ao",
    ),
    "PTQ then OpenVINO int8 export": (
        plain,
        lambda: [PostTrainingQuantizationCallback(), OpenVINOInt8ExportCallback("unused")],
        "PostTrainingQuantizationCallback and OpenVINOInt8ExportCallback conflict: "
        "OpenVINOInt8ExportCallback exports an OpenVINO int8 copy of the float model at train "
        "end, but PostTrainingQuantizationCallback quantizes the model to int8 at train end",
    ),
    "OpenVINO int8 export then converting QAT": (
        plain,
        lambda: [OpenVINOInt8ExportCallback("unused"), QuantizationAwareTrainingCallback()],
        "OpenVINOInt8ExportCallback and QuantizationAwareTrainingCallback conflict: .*converts "
        r"it to int8 at train end; the export quantizes the float model itself \(for QAT, pass "
        r"convert_at_end=False\)",
    ),
    "two OpenVINO int8 exports": (
        plain,
        lambda: [OpenVINOInt8ExportCallback("a"), OpenVINOInt8ExportCallback("b")],
        "OpenVINOInt8ExportCallback and another OpenVINOInt8ExportCallback conflict: both would "
        "write an int8 export",
    ),
    "hidden distillation then module replacement": (
        prepared,
        lambda: [kd(**HIDDEN), mr()],
        "hidden-state distillation \\(DistillationCallback .*conflicts with module replacement "
        "\\(ModuleReplacementCallback",
    ),
    "module replacement then hidden distillation": (
        prepared,
        lambda: [mr(), kd(**HIDDEN)],
        "hidden-state distillation \\(DistillationCallback .*conflicts with module replacement",
    ),
}


@pytest.mark.parametrize("case", list(CONFLICTS))
def test_conflicting_callbacks_fail_before_the_first_step(data, tmp_path, case) -> None:  # type: ignore[no-untyped-def]
    make_model, make_callbacks, message = CONFLICTS[case]
    counter = StepCounter()
    callbacks = make_callbacks()
    args = training_args(tmp_path, max_steps=1, eval_strategy="no")
    trainer = make_trainer(data, make_model(), args, [*callbacks, counter])
    with pytest.raises(ValueError, match=message) as error:
        trainer.train()
    for callback in callbacks:  # both callbacks are named
        assert type(callback).__name__ in str(error.value)
    assert counter.steps == 0


def test_hidden_distillation_refuses_a_model_under_module_replacement() -> None:
    distiller = Distiller(tiny_bert(num_layers=4), DistillationConfig(hidden_layer_map={1: 2}))
    with pytest.raises(ValueError, match="conflicts with module replacement"):
        distiller.attach(prepared())
    distiller.attach(tiny_bert(num_layers=2).train()).detach()  # the same map on a plain model


def test_a_second_loyalty_callback_is_refused(data, teacher, tmp_path) -> None:  # type: ignore[no-untyped-def]
    trainer = make_trainer(data, plain(), training_args(tmp_path), [])
    LoyaltyCallback(teacher).attach(trainer)
    with pytest.raises(ValueError, match="LoyaltyCallback and another LoyaltyCallback conflict"):
        LoyaltyCallback(teacher).attach(trainer)


def test_non_overlapping_prunings_combine(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    attention = r"bert\.encoder\.layer\.\d+\.attention\..*"
    feed_forward = r"bert\.encoder\.layer\.\d+\.(intermediate|output)\.dense"
    callbacks = [
        MagnitudePruningCallback(OneShotSchedule(0.5), module_pattern=attention),
        MagnitudePruningCallback(OneShotSchedule(0.25), module_pattern=feed_forward),
    ]
    args = training_args(tmp_path, max_steps=2, eval_strategy="no")
    trainer = make_trainer(data, plain(), args, callbacks)
    trainer.train()
    state = trainer.model.state_dict()
    for pattern, target, count in ((attention, 0.5, 8), (feed_forward, 0.25, 4)):
        names = list(prunable_weights(trainer.model, pattern))
        assert len(names) == count
        for name in names:
            assert int((state[name].numpy() == 0).sum()) == round(target * state[name].numel())


def test_feed_forward_pruning_with_head_removal(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    feed_forward = r"bert\.encoder\.layer\.\d+\.(intermediate|output)\.dense"
    callbacks = [
        MagnitudePruningCallback(OneShotSchedule(0.5), module_pattern=feed_forward),
        HeadPruningCallback({0: 0.25}, importance="magnitude", scope="layer"),
    ]
    args = training_args(tmp_path, max_steps=2, eval_strategy="no")
    trainer = make_trainer(data, plain(), args, callbacks)
    trainer.train()
    assert [len(layer) for layer in remaining_heads(trainer.model)] == [3, 3]
    query = trainer.model.bert.encoder.layer[0].attention.self.query.weight
    assert tuple(query.shape) == (24, 32)  # one of four 8-wide heads physically removed
    state = trainer.model.state_dict()
    for name in prunable_weights(trainer.model, feed_forward):
        assert int((state[name].numpy() == 0).sum()) == round(0.5 * state[name].numel())


class ClassifierNoise(TrainerCallback):
    """A callback written outside loyalkit: it declares what it changes and edits no table."""

    unique = None

    def __init__(self, target: str) -> None:
        self.target = target

    def changes(self) -> tuple[Change, ...]:
        if self.target == "loss":
            return (Change("loss", "adds a noise penalty to the loss"),)
        return (
            Change(
                "weights",
                "the noise moves pruned entries away from zero",
                fix="keep the noise off the pruned weights",
                weights=lambda model: [model.classifier.weight],
                label="the classifier",
            ),
        )

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        register_callback(self, state, model)


def test_a_new_callback_conflicts_by_its_declarations(data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    classifier = r"classifier"
    cases = [
        (
            [kd(), ClassifierNoise("loss")],
            "DistillationCallback and ClassifierNoise conflict: both replace the training loss",
        ),
        (
            [
                ClassifierNoise("weights"),
                MagnitudePruningCallback(OneShotSchedule(0.5), module_pattern=classifier),
            ],
            "ClassifierNoise and MagnitudePruningCallback conflict: both prune the classifier "
            "'classifier.weight'.*keep the noise off the pruned weights",
        ),
    ]
    for callbacks, message in cases:
        counter = StepCounter()
        args = training_args(tmp_path, max_steps=1, eval_strategy="no")
        trainer = make_trainer(data, plain(), args, [*callbacks, counter])
        with pytest.raises(ValueError, match=message):
            trainer.train()
        assert counter.steps == 0
    # Over disjoint weights (the encoder's, by default) they combine.
    state = TrainerState()
    model = plain()
    register_callback(ClassifierNoise("weights"), state, model)
    register_callback(MagnitudePruningCallback(OneShotSchedule(0.5)), state, model)
    assert conflict(ClassifierNoise("loss"), ClassifierNoise("weights"), model) is None
