"""TokenLoyaltyCallback in real Trainer runs of a tiny causal LM, checked against scipy."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from tiny_causal_lm import perturbed, scipy_token_report, tiny_llama, token_stream
from transformers import Trainer, TrainingArguments

from loyalkit.callbacks import LoyaltyCallback, TokenLoyaltyCallback

torch.set_num_threads(1)

WORKER = Path(__file__).resolve().parent / "token_loyalty_distributed_worker.py"


def _dataset(rows: int, seed: int) -> Dataset:
    ids = token_stream(rows * 16, seed=seed).reshape(rows, 16)
    labels = ids.clone()
    labels[0, :6] = -100  # positions left out of the loss are left out of loyalty too
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


class SubclassedTrainer(Trainer):
    """A Trainer subclass overriding compute_loss, as TRL's trainers do."""

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):  # type: ignore[override]
        return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)


def _trainer(tmp_path, trainer_class=Trainer, callbacks=None) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=3,  # 10 eval rows: a partial last batch
        max_steps=2,
        eval_strategy="steps",
        eval_steps=1,
        learning_rate=1e-3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        logging_steps=1,
    )
    return trainer_class(
        model=perturbed(tiny_llama()),
        args=args,
        train_dataset=_dataset(8, seed=3),
        eval_dataset=_dataset(10, seed=4),
        callbacks=callbacks,
    )


def _scipy_report(teacher, student, dataset) -> dict:
    ids = torch.tensor(dataset["input_ids"])
    labels = torch.tensor(dataset["labels"])[:, 1:]
    with torch.no_grad():
        t = teacher(input_ids=ids).logits[:, :-1][labels != -100].double().numpy()
        s = student(input_ids=ids).logits[:, :-1][labels != -100].double().numpy()
    targets = labels[labels != -100].numpy()
    return scipy_token_report(t, s, targets)


@pytest.mark.parametrize("trainer_class", [Trainer, SubclassedTrainer])
def test_every_evaluation_reports_token_loyalty(tmp_path, trainer_class):
    trainer = _trainer(tmp_path, trainer_class)
    teacher = tiny_llama()
    TokenLoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval_label_loyalty" in entry]
    assert [entry["step"] for entry in logged] == [1, 2]
    metrics = trainer.evaluate(metric_key_prefix="dev")
    expected = _scipy_report(teacher, trainer.model.eval(), trainer.eval_dataset)
    for name, value in expected.items():
        assert metrics[f"dev_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-9), name
    assert 0 < metrics["dev_label_loyalty"] < 1
    assert trainer.state.log_history[-1]["dev_label_loyalty"] == metrics["dev_label_loyalty"]


def test_loyalty_callback_judges_a_causal_lm_token_by_token(tmp_path):
    # The classifier callback, given a causal-LM student, reports the token-level values.
    trainer = _trainer(tmp_path)
    teacher = tiny_llama()
    LoyaltyCallback(teacher).attach(trainer)
    assert [type(cb) for cb in trainer.callback_handler.callbacks].count(TokenLoyaltyCallback) == 1
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "eval_label_loyalty" in e] == [1, 2]
    metrics = trainer.evaluate()
    expected = _scipy_report(teacher, trainer.model.eval(), trainer.eval_dataset)
    for name, value in expected.items():
        assert metrics[f"eval_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-9), name
    with pytest.raises(ValueError, match="conflict"):
        LoyaltyCallback(tiny_llama()).attach(trainer)
    with pytest.raises(ValueError, match="natural log only"):
        LoyaltyCallback(tiny_llama(), base=2).attach(_trainer(tmp_path / "b"))


def test_conflicts_and_misuse_are_refused(tmp_path):
    trainer = _trainer(tmp_path)
    TokenLoyaltyCallback(tiny_llama()).attach(trainer)
    with pytest.raises(ValueError, match="conflict"):
        TokenLoyaltyCallback(tiny_llama()).attach(trainer)
    with pytest.raises(TypeError, match="transformers.Trainer"):
        TokenLoyaltyCallback(tiny_llama()).attach(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.nn.Module"):
        TokenLoyaltyCallback("teacher")  # type: ignore[arg-type]
    assert not isinstance(trainer.callback_handler.callbacks[-1], LoyaltyCallback)


def test_eval_batches_without_labels_are_explained(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.eval_dataset = trainer.eval_dataset.remove_columns("labels")
    TokenLoyaltyCallback(tiny_llama()).attach(trainer)
    with pytest.raises(ValueError, match="needs `labels`"):
        trainer.evaluate()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_two_gloo_processes_match_the_single_process(tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    _run([sys.executable, str(WORKER), str(single)], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    _run([*torchrun, "--master_port", str(_free_port()), str(WORKER), str(double)], tmp_path)
    reference = json.loads((single / "rank0.json").read_text())
    ranks = [json.loads((double / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for name in ("label_loyalty", "probability_loyalty", "kl_divergence", "ppl_ratio"):
        key = f"eval_{name}"
        assert ranks[0][key] == ranks[1][key], key
        assert ranks[0][key] == pytest.approx(reference[key], rel=1e-6), key


def test_listed_but_never_attached_fails_at_train_begin(tmp_path):
    trainer = _trainer(tmp_path, callbacks=[TokenLoyaltyCallback(tiny_llama())])
    with pytest.raises(ValueError, match=r"never attached.*\.attach\(trainer\)"):
        trainer.train()
    assert trainer.state.global_step == 0
    with pytest.raises(ValueError, match="never attached"):
        trainer.evaluate()


@pytest.mark.parametrize("kind", [LoyaltyCallback, TokenLoyaltyCallback])
def test_listed_then_attached_reports_once(tmp_path, kind):
    teacher = tiny_llama()
    callback = kind(teacher)
    trainer = _trainer(tmp_path, callbacks=[callback])
    callback.attach(trainer)
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert kinds.count(TokenLoyaltyCallback) == 1
    metrics = trainer.evaluate()
    expected = _scipy_report(teacher, trainer.model.eval(), trainer.eval_dataset)
    for name, value in expected.items():
        assert metrics[f"eval_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-9), name
