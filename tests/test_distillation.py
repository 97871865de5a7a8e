"""Distillation losses, the teacher-logit cache and the Distiller hooks, against independent math.

References: scipy.special (rel_entr, softmax, log_softmax) and numpy for the losses, the closed-form
gradient of Hinton et al. (2015) for the KD gradient, and explicit recomputation for the hooks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, rel_entr, softmax
from tiny_bert import tiny_bert, tiny_bert_config
from torch import nn
from transformers import BertForSequenceClassification

from loyalkit.compression.distillation import (
    DistillationConfig,
    Distiller,
    TeacherLogitCache,
    check_layer_map,
    distillation_loss,
    hidden_state_loss,
    logit_kd_loss,
)

SHAPES = [(1, 2), (7, 3), (64, 2), (50, 11)]
TEMPERATURES = [0.5, 1.0, 2.0, 5.0]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_logits(shape: tuple[int, int], seed: int, scale: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


def reference_kd(student: np.ndarray, teacher: np.ndarray, temperature: float) -> np.ndarray:
    """Per-example T^2 * KL(p_teacher || p_student) at temperature T, with scipy."""
    p_teacher = softmax(teacher / temperature, axis=1)
    p_student = softmax(student / temperature, axis=1)
    return temperature**2 * rel_entr(p_teacher, p_student).sum(axis=1)


def reference_ce(student: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -log_softmax(student, axis=1)[np.arange(len(labels)), labels]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_logit_kd_matches_scipy_rel_entr(shape, temperature):
    student, teacher = random_logits(shape, 1), random_logits(shape, 2)
    expected = reference_kd(student, teacher, temperature)
    s, t = torch.tensor(student), torch.tensor(teacher)
    per_example = logit_kd_loss(s, t, temperature=temperature, reduction="none")
    np.testing.assert_allclose(per_example.numpy(), expected, rtol=1e-5, atol=1e-6)
    mean = logit_kd_loss(s, t, temperature=temperature)
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-5, abs=1e-6)
    total = logit_kd_loss(s, t, temperature=temperature, reduction="sum")
    assert float(total) == pytest.approx(expected.sum(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_kd_gradient_is_hintons_closed_form(temperature):
    # d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T * (softmax(s/T) - softmax(t/T)).
    student, teacher = random_logits((9, 4), 3), random_logits((9, 4), 4)
    s = torch.tensor(student, requires_grad=True)
    logit_kd_loss(s, torch.tensor(teacher), temperature=temperature, reduction="sum").backward()
    expected = temperature * (
        softmax(student / temperature, axis=1) - softmax(teacher / temperature, axis=1)
    )
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_kd_is_zero_for_identical_logits_and_positive_otherwise():
    logits = torch.tensor(random_logits((5, 3), 5))
    assert float(logit_kd_loss(logits, logits, temperature=3.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(logit_kd_loss(logits, logits.flip(0), temperature=3.0)) > 0.01


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_mixed_loss_matches_numpy(alpha, temperature):
    student, teacher = random_logits((20, 3), 6), random_logits((20, 3), 7)
    labels = np.random.default_rng(8).integers(0, 3, size=20)
    kd, ce = reference_kd(student, teacher, temperature), reference_ce(student, labels)
    loss = distillation_loss(
        torch.tensor(student),
        torch.tensor(teacher),
        torch.tensor(labels),
        temperature=temperature,
        alpha=alpha,
    )
    assert float(loss) == pytest.approx(alpha * kd.mean() + (1 - alpha) * ce.mean(), rel=1e-5)
    per_example = distillation_loss(
        torch.tensor(student),
        torch.tensor(teacher),
        torch.tensor(labels),
        temperature=temperature,
        alpha=alpha,
        reduction="none",
    )
    np.testing.assert_allclose(per_example.numpy(), alpha * kd + (1 - alpha) * ce, rtol=1e-5)


def test_mixed_loss_ignores_minus_100_labels_in_the_hard_label_mean():
    student, teacher = random_logits((6, 2), 9), random_logits((6, 2), 10)
    labels = np.array([0, 1, -100, 1, -100, 0])
    labelled = labels != -100
    ce = reference_ce(student[labelled], labels[labelled]).mean()
    kd = reference_kd(student, teacher, 2.0).mean()
    loss = distillation_loss(
        torch.tensor(student),
        torch.tensor(teacher),
        torch.tensor(labels),
        temperature=2.0,
        alpha=0.3,
    )
    assert float(loss) == pytest.approx(0.3 * kd + 0.7 * ce, rel=1e-5)


def test_pure_kl_needs_no_labels_and_mixed_loss_does():
    s, t = torch.tensor(random_logits((4, 2), 11)), torch.tensor(random_logits((4, 2), 12))
    expected = reference_kd(s.numpy(), t.numpy(), 2.0).mean()
    assert float(distillation_loss(s, t, temperature=2.0, alpha=1.0)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="`labels`.*alpha"):
        distillation_loss(s, t, temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="`labels` must be 1-D"):
        distillation_loss(s, t, torch.tensor([0, 1]), alpha=0.5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"temperature": 0.0}, ValueError, "`temperature`"),
        ({"temperature": -1.0}, ValueError, "`temperature`"),
        ({"temperature": float("nan")}, ValueError, "`temperature`"),
        ({"temperature": True}, TypeError, "`temperature`"),
        ({"alpha": 1.5}, ValueError, r"`alpha` must be in \[0, 1.0\]"),
        ({"alpha": -0.1}, ValueError, "`alpha`"),
        ({"reduction": "max"}, ValueError, "`reduction`"),
    ],
)
def test_bad_loss_arguments_are_named(kwargs, error, match):
    s = torch.zeros(3, 2)
    with pytest.raises(error, match=match):
        distillation_loss(s, s, torch.zeros(3, dtype=torch.long), **kwargs)


def test_logit_shapes_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        logit_kd_loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="`student_logits` must be 2-D"):
        logit_kd_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="`teacher_logits` must be a torch.Tensor"):
        logit_kd_loss(torch.zeros(3, 2), np.zeros((3, 2)))


def random_hidden(layers: int, shape: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for _ in range(layers + 1)]


def reference_hidden(student, teacher, layer_map, mask, normalize):
    """Per-example sum over mapped layers of the masked mean squared difference, in numpy."""
    total = np.zeros(student[0].shape[0])
    for s_layer, t_layer in layer_map.items():
        s, t = student[s_layer], teacher[t_layer]
        if normalize:
            s = s / np.linalg.norm(s, axis=-1, keepdims=True)
            t = t / np.linalg.norm(t, axis=-1, keepdims=True)
        per_token = ((s - t) ** 2).mean(axis=-1)
        total += (per_token * mask).sum(axis=1) / mask.sum(axis=1)
    return total


@pytest.mark.parametrize("normalize", [False, True])
def test_hidden_state_loss_matches_numpy(normalize):
    student = random_hidden(2, (5, 7, 8), 13)
    teacher = random_hidden(4, (5, 7, 8), 14)
    mask = np.ones((5, 7))
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    layer_map = {0: 0, 1: 2, 2: 4}
    expected = reference_hidden(student, teacher, layer_map, mask, normalize)
    ours = hidden_state_loss(
        [torch.tensor(h) for h in student],
        [torch.tensor(h) for h in teacher],
        layer_map,
        attention_mask=torch.tensor(mask),
        normalize=normalize,
        reduction="none",
    )
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5)
    # Without a mask every token counts.
    unmasked = hidden_state_loss(
        [torch.tensor(h) for h in student], [torch.tensor(h) for h in teacher], {2: 3}
    )
    expected_unmasked = reference_hidden(student, teacher, {2: 3}, np.ones((5, 7)), False)
    assert float(unmasked) == pytest.approx(expected_unmasked.mean(), rel=1e-5)


def test_hidden_state_loss_rejects_different_hidden_sizes():
    student = [torch.zeros(2, 3, 8)] * 3
    teacher = [torch.zeros(2, 3, 16)] * 3
    with pytest.raises(ValueError, match="`layer_map` pairs student layer 1"):
        hidden_state_loss(student, teacher, {1: 1})


@pytest.mark.parametrize(
    "layer_map, match",
    [
        ({3: 1}, r"`layer_map` names student layer 3, outside the range 0\.\.2"),
        ({1: 5}, r"`layer_map` names teacher layer 5, outside the range 0\.\.4"),
        ({-1: 1}, r"`layer_map` names student layer -1, outside the range 0\.\.2"),
    ],
)
def test_layer_map_out_of_range_names_argument_and_range(layer_map, match):
    with pytest.raises(ValueError, match=match):
        check_layer_map(layer_map, student_layers=2, teacher_layers=4)


def test_layer_map_types_are_checked():
    with pytest.raises(TypeError, match="`layer_map` layers must be ints"):
        check_layer_map({1.0: 2}, 2, 4)
    with pytest.raises(TypeError, match="`layer_map` must be a mapping"):
        check_layer_map([(1, 2)], 2, 4)
    assert check_layer_map({0: 0, 2: 4}, 2, 4) == {0: 0, 2: 4}


def test_cache_keys_ignore_padding_and_order_but_not_content():
    ids = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 7, 9, 3, 5, 3]])
    mask = (ids != 0).long()
    keys = TeacherLogitCache.keys(ids, mask)
    repadded = TeacherLogitCache.keys(torch.tensor([[2, 7, 9, 3]]), torch.ones(1, 4))
    assert repadded[0] == keys[0]
    assert keys[0] != keys[1]
    types = torch.tensor([[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]])
    assert TeacherLogitCache.keys(ids, mask, types)[1] != TeacherLogitCache.keys(ids, mask)[1]
    assert len(set(TeacherLogitCache.keys(ids, mask, types))) == 2


def test_cache_lookup_needs_every_key():
    cache = TeacherLogitCache()
    keys = TeacherLogitCache.keys(torch.tensor([[1, 2], [3, 4], [5, 6]]))
    cache.store(keys[:2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert cache.lookup(keys) is None
    assert cache.lookup(keys[1::-1]).tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="`keys`"):
        cache.store(keys, torch.zeros(2, 2))
    cache.clear()
    assert len(cache) == 0


def test_config_refuses_cache_with_hidden_state_kd():
    with pytest.raises(ValueError, match="`cache_teacher_logits=True` cannot be combined"):
        DistillationConfig(hidden_layer_map={1: 2}, cache_teacher_logits=True)
    with pytest.raises(ValueError, match="`hidden_layer_map` must be a non-empty mapping"):
        DistillationConfig(hidden_layer_map={})
    with pytest.raises(ValueError, match="`hidden_weight`"):
        DistillationConfig(hidden_weight=-1.0)


def test_config_refuses_a_hidden_weight_of_zero_and_non_bool_flags():
    # A weight of 0 would keep the hidden-state loss but count it for nothing: a silent no-op.
    with pytest.raises(ValueError, match="`hidden_weight` must be > 0, got 0"):
        DistillationConfig(hidden_layer_map={1: 2}, hidden_weight=0)
    with pytest.raises(TypeError, match="`hidden_normalize` must be True or False, got 'yes'"):
        DistillationConfig(hidden_normalize="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`cache_teacher_logits` must be True or False, got 1"):
        DistillationConfig(cache_teacher_logits=1)  # type: ignore[arg-type]


def dropout_free_bert(num_layers: int = 2, seed: int = 2) -> BertForSequenceClassification:
    """tiny_bert without dropout, so train-mode forwards are deterministic.

    Built from the config: transformers 4.57's SDPA attention reads the dropout rate from the
    config at construction, not from the Dropout module.
    """
    config = tiny_bert_config(num_layers=num_layers)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def confident(model: nn.Module, scale: float = 30.0) -> nn.Module:
    """Scale the classifier so a random tiny BERT is far from uniform (KD values well above 0)."""
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
    return model


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 150, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[3, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


def test_distiller_replaces_the_training_loss_only(one_thread):
    teacher, student = confident(tiny_bert(seed=1)), dropout_free_bert()
    inputs = batch()
    with torch.no_grad():
        t = teacher(**inputs).logits.numpy()
        s = student(**inputs).logits.numpy()
        own_loss = float(student(**inputs).loss)
    expected = 0.3 * reference_kd(s, t, 3.0) + 0.7 * reference_ce(s, inputs["labels"].numpy())
    distiller = Distiller(teacher, DistillationConfig(temperature=3.0, alpha=0.3)).attach(student)
    student.train()
    assert float(student(**inputs).loss) == pytest.approx(expected.mean(), rel=1e-5)
    # The Trainer's loss-kwargs convention: sum over examples / items in the accumulated batch.
    # (Called on the Distiller: BERT's forward takes **kwargs on transformers 5, not on 4.57.)
    summed = distiller.loss(student(**inputs), {**inputs, "num_items_in_batch": torch.tensor(10)})
    assert float(summed) == pytest.approx(expected.sum() / 10, rel=1e-5)
    student.eval()
    assert float(student(**inputs).loss) == pytest.approx(own_loss, rel=1e-6)
    assert not teacher.training
    distiller.detach()
    student.train()
    assert float(student(**inputs).loss) == pytest.approx(own_loss, rel=1e-6)


def test_distiller_positional_inputs_and_pure_kl_without_labels(one_thread):
    teacher, student = confident(tiny_bert(seed=1)), dropout_free_bert()
    ids = batch()["input_ids"]
    with torch.no_grad():
        expected = reference_kd(student(ids).logits.numpy(), teacher(ids).logits.numpy(), 2.0)
    Distiller(teacher, DistillationConfig(temperature=2.0, alpha=1.0)).attach(student.train())
    assert float(student(ids).loss) == pytest.approx(expected.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="`labels` are needed when `alpha` < 1"):
        other_student = tiny_bert().train()
        Distiller(tiny_bert(seed=1), DistillationConfig(alpha=0.5)).attach(other_student)
        other_student(ids)


def test_distiller_hidden_state_kd_requests_and_drops_hidden_states(one_thread):
    teacher = confident(tiny_bert(num_layers=4, seed=1))
    student = dropout_free_bert(num_layers=2)
    inputs = batch()
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True)
        s = student(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"].numpy()
    layer_map = {1: 2, 2: 4}
    hidden = reference_hidden(
        [h.numpy() for h in s.hidden_states],
        [h.numpy() for h in t.hidden_states],
        layer_map,
        mask,
        True,
    )
    logits = 0.5 * reference_kd(s.logits.numpy(), t.logits.numpy(), 2.0) + 0.5 * reference_ce(
        s.logits.numpy(), inputs["labels"].numpy()
    )
    config = DistillationConfig(
        hidden_layer_map=layer_map, hidden_weight=0.7, hidden_normalize=True
    )
    Distiller(teacher, config).attach(student.train())
    outputs = student(**inputs)
    assert float(outputs.loss) == pytest.approx((logits + 0.7 * hidden).mean(), rel=1e-5)
    assert outputs.hidden_states is None  # asked for by the hook, not by the caller
    assert len(student(**inputs, output_hidden_states=True).hidden_states) == 3


def test_distiller_cache_reuses_teacher_logits(one_thread):
    teacher, student = confident(tiny_bert(seed=1)), dropout_free_bert()
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    inputs = batch()
    distiller = Distiller(teacher, DistillationConfig(cache_teacher_logits=True)).attach(student)
    student.train()
    first = student(**inputs).loss
    # The same examples in another order and with extra padding hit the cache.
    order = torch.tensor([2, 0, 3, 1])
    shuffled = {k: v[order] for k, v in inputs.items()}
    shuffled["input_ids"] = torch.cat(
        [shuffled["input_ids"], torch.zeros(4, 3, dtype=torch.long)], 1
    )
    shuffled["attention_mask"] = torch.cat(
        [shuffled["attention_mask"], torch.zeros(4, 3, dtype=torch.long)], 1
    )
    second = student(**shuffled).loss
    assert len(calls) == 1 and len(distiller.cache) == 4
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-6)


def test_distiller_misuse_errors():
    student = tiny_bert(num_labels=2, num_layers=2)
    with pytest.raises(ValueError, match="`teacher` has 3 labels but the student has 2"):
        Distiller(tiny_bert(num_labels=3)).attach(student)
    with pytest.raises(
        ValueError, match=r"`layer_map` names teacher layer 3, outside the range 0\.\.2"
    ):
        Distiller(tiny_bert(), DistillationConfig(hidden_layer_map={2: 3})).attach(student)
    with pytest.raises(TypeError, match="`teacher` must be a torch.nn.Module"):
        Distiller("bert-base-uncased")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same module"):
        Distiller(student).attach(student)
    Distiller(tiny_bert()).attach(student)
    with pytest.raises(ValueError, match="already has a Distiller attached"):
        Distiller(tiny_bert()).attach(student)
