"""Every compression method on tiny classifiers of eleven architectures, each cell checked independently.

The expected block weights come from ``tiny_architectures.BLOCK_WEIGHTS`` (regular expressions
written from the transformers source), zeros are counted here, losses recomputed by hand, logits
compared before and after a physical change and after reloading. A method that cannot apply to an
architecture must refuse with an error naming it; no cell passes by doing nothing.
"""

from __future__ import annotations

import math
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


def test_magnitude_pruning_without_a_layer_list_names_the_fix() -> None:
    from torch import nn

    with pytest.raises(
        ValueError, match=r"Sequential: no list of transformer layers.*module_pattern"
    ):
        magnitude_prune(nn.Sequential(nn.Linear(4, 4)), 0.5)
    masks = magnitude_prune(nn.Sequential(nn.Linear(4, 4)), 0.5, module_pattern="0")
    assert list(masks.masks) == ["0.weight"]


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
        with pytest.raises(ValueError, match="Conv1D"):  # a Trainer's save_model: the same
            model.save_pretrained(tmp_path / "q")
        return
    save_quantized(model, tmp_path / "q")
    from transformers import AutoModelForSequenceClassification

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "q")
    assert torch.equal(logits(reloaded, batch).argmax(-1), after.argmax(-1))
    assert torch.allclose(logits(reloaded, batch), after, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_int8_qat_fake_quantizes_and_converts_every_block_weight(arch: str, tmp_path: Path) -> None:
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
    converted = logits(model, batch)
    assert torch.allclose(converted, fake, atol=0.05)
    if arch == "gpt2":  # see test_int8_ptq_quantizes_every_block_weight
        return
    from transformers import AutoModelForSequenceClassification

    save_quantized(model, tmp_path / "qat")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "qat")
    assert torch.allclose(logits(reloaded, batch), converted, atol=1e-5)


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


# ---------------------------------------------------------------- knowledge distillation


def _hand_kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, t: float, alpha: float
) -> float:
    """``mean(alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE)`` in float64, written out."""
    s, te = student.double(), teacher.double()
    log_ps = s / t - torch.logsumexp(s / t, dim=1, keepdim=True)
    log_pt = te / t - torch.logsumexp(te / t, dim=1, keepdim=True)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1) * t * t
    log_p1 = s - torch.logsumexp(s, dim=1, keepdim=True)
    ce = -log_p1[torch.arange(len(labels)), labels]
    return float((alpha * kl + (1 - alpha) * ce).mean())


def _with_segments(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BERT tokenizer's sentence pair: segment 1 from the middle on (padding excepted)."""
    segments = torch.zeros_like(batch["input_ids"])
    segments[:, 6:] = 1
    return {**batch, "token_type_ids": segments * batch["attention_mask"]}


def _distil_and_check(teacher_arch: str, student_arch: str) -> None:
    from loyalkit.compression import DistillationConfig, Distiller

    teacher = tiny_classifier(teacher_arch, layers=4, seed=0)
    student = tiny_classifier(student_arch, layers=2, seed=1).train()
    batch = tiny_batch(student_arch, seed=2)
    if getattr(student.config, "type_vocab_size", 0):
        batch = _with_segments(batch)
    distiller = Distiller(teacher, DistillationConfig(temperature=2.0, alpha=0.5)).attach(student)
    loss = student(**batch).loss
    distiller.detach()
    # What the teacher sees on its own: its own inputs only (segments only if it embeds them).
    own = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if getattr(teacher.config, "type_vocab_size", 0) and "token_type_ids" in batch:
        own["token_type_ids"] = batch["token_type_ids"]
    with torch.no_grad():
        teacher_logits = teacher(**own).logits
        student_logits = student(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = _hand_kd_loss(student_logits, teacher_logits, batch["labels"], 2.0, 0.5)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # and it is not the student's plain cross-entropy
    with torch.no_grad():
        assert float(loss) != pytest.approx(float(student(**batch).loss), rel=1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_kd_loss_equals_the_hand_computation(arch: str) -> None:
    _distil_and_check(arch, arch)


@pytest.mark.parametrize(
    ("teacher_arch", "student_arch"),
    [
        ("distilbert", "bert"),  # the student's batch has token_type_ids, the teacher no segments
        ("bert", "distilbert"),
        ("gpt2", "bert"),  # GPT-2 would embed token_type_ids as tokens
        ("bert", "gpt2"),
        ("llama", "modernbert"),
        ("deberta-v2", "roberta"),
    ],
)
def test_kd_mixed_families_give_the_teacher_its_own_inputs(
    teacher_arch: str, student_arch: str
) -> None:
    _distil_and_check(teacher_arch, student_arch)


def _small_vocabulary_student() -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=80,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
    )
    return BertForSequenceClassification(config)


def test_kd_and_loyalty_refuse_a_teacher_with_another_vocabulary_before_step_one(
    tmp_path: Path,
) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from loyalkit.callbacks import DistillationCallback, LoyaltyCallback

    teacher = tiny_classifier("bert")  # 96 tokens
    student = _small_vocabulary_student()
    batch = tiny_batch("bert", rows=8)
    batch["input_ids"] = batch["input_ids"] % 80
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, report_to="none", use_cpu=True, disable_tqdm=True
    )
    trainer = Trainer(
        model=student,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        callbacks=[DistillationCallback(teacher)],
    )
    with pytest.raises(ValueError, match="vocabulary of 96 tokens but the student .* has 80"):
        trainer.train()
    assert trainer.state.global_step == 0
    with pytest.raises(ValueError, match="vocabulary of 96 tokens"):
        LoyaltyCallback(teacher).attach(Trainer(model=student, args=args, eval_dataset=data))


@pytest.mark.parametrize(
    ("teacher_arch", "student_arch"), [("distilbert", "bert"), ("gpt2", "bert")]
)
def test_loyalty_callback_runs_a_teacher_of_another_family(
    teacher_arch: str, student_arch: str, tmp_path: Path
) -> None:
    from datasets import Dataset
    from scipy.spatial.distance import jensenshannon
    from sklearn.metrics import accuracy_score
    from transformers import Trainer, TrainingArguments

    from loyalkit.callbacks import LoyaltyCallback

    teacher = tiny_classifier(teacher_arch, seed=3)
    student = tiny_classifier(student_arch, layers=2, seed=4)
    batch = _with_segments(tiny_batch(student_arch, rows=8, seed=5))
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=8,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=student, args=args, eval_dataset=data)
    LoyaltyCallback(teacher).attach(trainer)
    metrics = trainer.evaluate()
    own = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher_logits = teacher(**own).logits.double()
        student_logits = logits(student, batch).double()
    assert metrics["eval_label_loyalty"] == pytest.approx(
        accuracy_score(teacher_logits.argmax(-1).numpy(), student_logits.argmax(-1).numpy())
    )
    distance = jensenshannon(
        teacher_logits.softmax(-1).numpy(), student_logits.softmax(-1).numpy(), axis=1
    )
    assert metrics["eval_probability_loyalty"] == pytest.approx(float((1 - distance).mean()))


# ---------------------------------------------------------------- head pruning

# the attention output projection of layer {i}, written from the transformers source: its input
# entries run over heads (key/value groups of 2 query heads for Llama/Qwen2), 8 per head
_OUTPUT_PROJECTION = {
    "bert": "bert.encoder.layer.{i}.attention.output.dense",
    "roberta": "roberta.encoder.layer.{i}.attention.output.dense",
    "xlm-roberta": "roberta.encoder.layer.{i}.attention.output.dense",
    "electra": "electra.encoder.layer.{i}.attention.output.dense",
    "distilbert": "distilbert.transformer.layer.{i}.attention.out_lin",
    "deberta-v2": "deberta.encoder.layer.{i}.attention.output.dense",
    "modernbert": "model.layers.{i}.attn.Wo",
    "gpt2": "transformer.h.{i}.attn.c_proj",
    "llama": "model.layers.{i}.self_attn.o_proj",
    "qwen2": "model.layers.{i}.self_attn.o_proj",
}
_HEAD_PRUNABLE = tuple(_OUTPUT_PROJECTION)


def _silence_by_hand(arch: str, model: torch.nn.Module, heads: dict[int, list[int]]) -> None:
    """Zero the output-projection entries of ``heads`` (original = current indices here)."""
    width = 16 if arch in ("llama", "qwen2") else 8
    modules = dict(model.named_modules())
    with torch.no_grad():
        for layer, layer_heads in heads.items():
            weight = modules[_OUTPUT_PROJECTION[arch].format(i=layer)].weight
            for head in layer_heads:
                entries = slice(head * width, (head + 1) * width)
                if arch == "gpt2":  # Conv1D: weight is (inputs, outputs)
                    weight[entries, :] = 0
                else:
                    weight[:, entries] = 0


@pytest.mark.parametrize("arch", _HEAD_PRUNABLE)
def test_head_pruning_removes_heads_physically_and_reloads(arch: str, tmp_path: Path) -> None:
    from loyalkit.compression import (
        gradient_head_importance,
        load_head_pruned,
        magnitude_head_importance,
        prune_heads,
        remaining_heads,
        select_heads_to_prune,
    )

    model = tiny_classifier(arch)
    batch = tiny_batch(arch)
    units = 2 if arch in ("llama", "qwen2") else 4
    importance = gradient_head_importance(model, [batch])
    assert importance.shape == (4, units) and torch.isfinite(importance).all()
    assert magnitude_head_importance(model).shape == (4, units)
    heads = select_heads_to_prune(importance, 0.5)
    assert sum(len(h) for h in heads.values()) == 2 * units

    reference = tiny_classifier(arch)
    _silence_by_hand(arch, reference, heads)
    expected = logits(reference, batch)
    # a silenced head has exactly zero gradient importance: the gates see the right slices
    silenced = gradient_head_importance(reference, [batch], normalize=False)
    for layer, layer_heads in heads.items():
        assert torch.all(silenced[layer, layer_heads] == 0)
        others = [h for h in range(units) if h not in layer_heads]
        assert torch.all(silenced[layer, others] > 0)

    before = logits(model, batch)
    parameters = sum(p.numel() for p in model.parameters())
    prune_heads(model, heads)
    after = logits(model, batch)
    change = float((after - before).abs().max())
    error = float((after - expected).abs().max())
    # something was removed (tiny random models have logits of about 1e-2) ... exactly the chosen heads
    assert change > 1e-5 and error < change / 100
    assert sum(p.numel() for p in model.parameters()) < parameters
    assert remaining_heads(model) == [
        [h for h in range(units) if h not in heads.get(i, [])] for i in range(4)
    ]
    model.save_pretrained(tmp_path)
    reloaded = load_head_pruned(tmp_path).eval()
    assert type(reloaded) is type(model)
    assert torch.allclose(logits(reloaded, batch), after, atol=1e-6)


def test_head_pruning_refuses_albert_by_name() -> None:
    from loyalkit.compression import gradient_head_importance, prune_heads

    model = tiny_classifier("albert")
    for call in (
        lambda: prune_heads(model, {0: [1]}),
        lambda: gradient_head_importance(model, [tiny_batch("albert")]),
    ):
        with pytest.raises(
            ValueError,
            match=r"AlbertForSequenceClassification \(albert\) shares.*supported families: bert",
        ):
            call()


# ---------------------------------------------------------------- module replacement (BERT-of-Theseus)

_LAYER_LISTS = {
    "bert": "bert.encoder.layer",
    "roberta": "roberta.encoder.layer",
    "xlm-roberta": "roberta.encoder.layer",
    "electra": "electra.encoder.layer",
    "distilbert": "distilbert.transformer.layer",
    "deberta-v2": "deberta.encoder.layer",
    "modernbert": "model.layers",
    "gpt2": "transformer.h",
    "llama": "model.layers",
    "qwen2": "model.layers",
}


def _hand_successor(arch: str, teacher: torch.nn.Module, sources: list[int]) -> torch.nn.Module:
    """The teacher with only the ``sources`` layers, in order: cut by hand here."""
    import copy

    model = copy.deepcopy(teacher)
    owner_path, _, attribute = _LAYER_LISTS[arch].rpartition(".")
    owner = dict(model.named_modules())[owner_path]
    layers = getattr(owner, attribute)
    chosen = [layers[j] for j in sources]
    if arch == "modernbert":  # every ModernBERT's first layer has no attention pre-norm
        chosen[0].attn_norm = torch.nn.Identity()
    setattr(owner, attribute, torch.nn.ModuleList(chosen))
    model.config.num_hidden_layers = len(sources)  # Llama and Qwen2 slice by it
    if isinstance(getattr(model.config, "layer_types", None), list):  # Qwen2 indexes it
        model.config.layer_types = [model.config.layer_types[j] for j in sources]
    return model.eval()


@pytest.mark.parametrize("arch", _HEAD_PRUNABLE)
def test_module_replacement_and_successor_export(arch: str, tmp_path: Path) -> None:
    import copy

    from transformers import AutoModelForSequenceClassification

    from loyalkit.compression import export_successor, prepare_module_replacement

    teacher = tiny_classifier(arch)
    batch = tiny_batch(arch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    sources = [1, 3]  # "every_kth"
    if arch == "modernbert" and not hasattr(teacher.config, "layer_types"):
        # transformers 4.x derives global/local from the position: layer 1 (local) cannot become
        # successor layer 0 (global)
        with pytest.raises(ValueError, match="global_attn_every_n_layers=3"):
            prepare_module_replacement(copy.deepcopy(teacher), 2, successor_init="every_kth")
        sources = [0, 2]
    hand = _hand_successor(arch, teacher, sources)
    expected = logits(hand, batch)
    assert not torch.allclose(expected, logits(teacher, batch), atol=1e-5)

    model = copy.deepcopy(teacher)
    layers = prepare_module_replacement(model, 2, successor_init=sources, replacement_rate=1.0)
    assert torch.allclose(logits(model, batch), expected, atol=1e-6)  # eval: the successor
    layers.eval_with = "predecessor"
    assert torch.allclose(logits(model, batch), logits(teacher, batch), atol=1e-6)
    layers.eval_with = "successor"
    model.train()  # dropout is off: the drawn path alone decides the output
    assert torch.allclose(model(**inputs).logits, expected, atol=1e-6)
    layers.replacement_rate = 0.0
    assert torch.allclose(model(**inputs).logits, logits(teacher, batch), atol=1e-6)
    # a training step moves only the successor layers
    layers.replacement_rate = 0.5
    layers.manual_seed(3)
    model(**batch).loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(".successor." in n for n in trained)

    student = export_successor(model.eval())
    assert student.config.num_hidden_layers == 2
    assert torch.allclose(logits(student, batch), expected, atol=1e-6)
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(reloaded, batch), expected, atol=1e-6)
    if arch == "modernbert" and sources == [1, 3]:  # layer 1 is local, 3 global: both kept
        assert reloaded.config.layer_types == ["sliding_attention", "full_attention"]


def test_module_replacement_refuses_albert_by_name() -> None:
    from loyalkit.compression import prepare_module_replacement

    with pytest.raises(
        ValueError,
        match=r"module replacement needs one module per transformer layer.*\(albert\).*supported families: bert",
    ):
        prepare_module_replacement(tiny_classifier("albert"), 2)


def _trainer(model: torch.nn.Module, arch: str, tmp_path: Path, callbacks: list, steps: int = 2):  # type: ignore[no-untyped-def,type-arg]
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    batch = tiny_batch(arch, rows=16, seed=1)
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_pruning_callback_in_a_trainer(arch: str, tmp_path: Path) -> None:
    from loyalkit.callbacks import HeadPruningCallback
    from loyalkit.compression import load_head_pruned, remaining_heads

    model = tiny_classifier(arch).train()
    trainer = _trainer(
        model, arch, tmp_path, [HeadPruningCallback({1: 0.5}, importance="gradient")]
    )
    if arch == "albert":  # refused before the first step, naming the architecture
        with pytest.raises(ValueError, match=r"\(albert\) shares.*supported families"):
            trainer.train()
        assert trainer.state.global_step == 0
        return
    trainer.train()
    units = 2 if arch in ("llama", "qwen2") else 4
    left = remaining_heads(model)
    assert sum(len(heads) for heads in left) == 4 * units // 2  # half removed physically
    # the output projections shrank to what is left (counted from the tensors)
    modules = dict(model.named_modules())
    width = 16 if arch in ("llama", "qwen2") else 8
    for i, heads in enumerate(left):
        weight = modules[_OUTPUT_PROJECTION[arch].format(i=i)].weight
        assert weight.shape[0 if arch == "gpt2" else 1] == len(heads) * width
    model.eval()
    trainer.save_model(str(tmp_path / "pruned"))
    reloaded = load_head_pruned(tmp_path / "pruned").eval()
    batch = tiny_batch(arch)
    assert torch.allclose(logits(reloaded, batch), logits(model, batch), atol=1e-6)


@pytest.mark.parametrize("arch", _HEAD_PRUNABLE)
def test_module_replacement_callback_trains_and_exports(arch: str, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from loyalkit.callbacks import ModuleReplacementCallback
    from loyalkit.compression import ConstantReplacementSchedule, prepare_module_replacement

    model = tiny_classifier(arch).train()
    layers = prepare_module_replacement(model, 2)
    predecessor = [p.detach().clone() for p in layers.predecessor_parameters()]
    successor = [p.detach().clone() for p in layers.successor_parameters()]
    callback = ModuleReplacementCallback(
        ConstantReplacementSchedule(rate=0.5), seed=0, export_dir=str(tmp_path / "successor")
    )
    _trainer(model, arch, tmp_path, [callback], steps=3).train()
    assert all(
        torch.equal(a, b) for a, b in zip(predecessor, layers.predecessor_parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(successor, layers.successor_parameters(), strict=True)
    )
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "successor").eval()
    assert reloaded.config.num_hidden_layers == 2
    batch = tiny_batch(arch)
    assert torch.allclose(logits(reloaded, batch), logits(model.eval(), batch), atol=1e-6)


def test_gpt2_fake_quantized_checkpoints_reload_into_plain_gpt2(tmp_path: Path) -> None:
    from transformers import GPT2ForSequenceClassification

    model = tiny_classifier("gpt2")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    batch = tiny_batch("gpt2")
    prepare_qat(model)
    fake = logits(model, batch)
    model.save_pretrained(tmp_path)  # what every Trainer checkpoint does
    reloaded = GPT2ForSequenceClassification.from_pretrained(tmp_path).eval()
    state = reloaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.items())  # Conv1D layout, same values
    # a resumed run: another prepared GPT-2 takes the checkpoint and computes the same
    other = tiny_classifier("gpt2", seed=5)
    prepare_qat(other)
    other.load_state_dict(reloaded.state_dict())
    assert torch.equal(logits(other, batch), fake)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_uniform_group_pruning_reloads_with_plain_from_pretrained(
    arch: str, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    from loyalkit.compression import (
        gradient_head_importance,
        load_head_pruned,
        prune_heads,
        remaining_heads,
        select_heads_to_prune,
    )

    model = tiny_classifier(arch)
    batch = tiny_batch(arch)
    groups = select_heads_to_prune(gradient_head_importance(model, [batch]), 0.5, scope="layer")
    assert all(len(g) == 1 for g in groups.values()) and len(groups) == 4  # 1 of 2 per layer
    reference = tiny_classifier(arch)
    _silence_by_hand(arch, reference, groups)
    prune_heads(model, groups)
    after = logits(model, batch)
    assert torch.allclose(after, logits(reference, batch), atol=1e-5)
    # the config now describes the smaller model: 1 key/value head, 2 query heads, head_dim 8
    assert (model.config.num_key_value_heads, model.config.num_attention_heads) == (1, 2)
    model.save_pretrained(tmp_path)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert plain.model.layers[0].self_attn.k_proj.out_features == 8
    assert torch.allclose(logits(plain, batch), after, atol=1e-6)
    loaded = load_head_pruned(tmp_path).eval()  # the same, with the original indices recorded
    assert remaining_heads(loaded) == remaining_heads(model)
    assert torch.allclose(logits(loaded, batch), after, atol=1e-6)
