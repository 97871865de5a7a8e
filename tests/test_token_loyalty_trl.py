"""TokenLoyaltyCallback inside TRL's SFTTrainer (a real Trainer subclass), checked against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trl
from datasets import Dataset
from tiny_causal_lm import TEXTS, byte_level_tokenizer, perturbed, scipy_token_report, tiny_llama
from transformers import Trainer

from loyalkit.callbacks import TokenLoyaltyCallback

torch.set_num_threads(1)

# Texts of different lengths: the collator pads them, and padded positions (labels -100) must be
# left out of loyalty as they are of the loss.
EVAL_TEXTS = [*TEXTS, "The dog sat.", "Water boils at one hundred degrees."]


def _scipy_report(teacher, student, dataloader) -> dict:
    """The reference from the batches SFTTrainer itself collates (its tokenisation and padding)."""
    t_rows, s_rows, target_rows = [], [], []
    with torch.no_grad():
        for batch in dataloader:
            inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            labels = batch["labels"][:, 1:]
            scored = labels != -100
            t_rows.append(teacher(**inputs).logits[:, :-1][scored].double().numpy())
            s_rows.append(student(**inputs).logits[:, :-1][scored].double().numpy())
            target_rows.append(labels[scored].numpy())
    t, s, targets = np.concatenate(t_rows), np.concatenate(s_rows), np.concatenate(target_rows)
    return scipy_token_report(t, s, targets)


def test_sft_trainer_reports_token_loyalty(tmp_path):
    tokenizer = byte_level_tokenizer(TEXTS)
    teacher = tiny_llama(vocab_size=len(tokenizer))
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=4,  # 6 eval texts: a partial last batch
        max_steps=2,
        eval_strategy="steps",
        eval_steps=1,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        max_length=64,
    )
    trainer = trl.SFTTrainer(
        model=perturbed(teacher),
        args=args,
        train_dataset=Dataset.from_dict({"text": TEXTS}),
        eval_dataset=Dataset.from_dict({"text": EVAL_TEXTS}),
        processing_class=tokenizer,
    )
    TokenLoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval_label_loyalty" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    metrics = trainer.evaluate(metric_key_prefix="dev")
    dataloader = trainer.get_eval_dataloader()
    assert any((batch["labels"] == -100).any() for batch in dataloader), "no padding was tested"
    expected = _scipy_report(teacher, trainer.model.eval(), dataloader)
    for name, value in expected.items():
        assert metrics[f"dev_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-9), name
    assert 0 < metrics["dev_label_loyalty"] < 1
    # A real subclass with its own loss (and its own collator, whose padding was checked above).
    assert trl.SFTTrainer.compute_loss is not Trainer.compute_loss
