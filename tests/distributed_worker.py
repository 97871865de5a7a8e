"""One compression run in a plain ``transformers.Trainer``, alone or under a distributed launcher.

``tests/test_distributed.py`` runs this script as a single process and with 2 CPU processes (gloo)
under ``torchrun`` and ``accelerate launch``, then compares what each run wrote. The run: a tiny
fine-tuned 4-layer BERT teacher (saved by the test), its copy prepared for module replacement to 2
layers (BERT-of-Theseus), trained for a few steps with KD, global cubic magnitude pruning and
loyalty tracking; the successor is exported at train end.

Deterministic on purpose, so that 1 and 2 processes can be compared: no dropout, the same global
batch (8 = 8 x 1 = 4 x 2: the accelerate-sharded sampler hands the two ranks the two halves of the
single process's batch), padding to a fixed length (same shapes per example), plain SGD without
gradient clipping (a wrongly scaled loss under DDP would show in the weights; Adam would hide
it), replacement draws seeded per step (identical on every rank).

Usage: ``python tests/distributed_worker.py TEACHER_DIR OUTPUT_DIR`` (or under a launcher);
``TEACHER_DIR`` holds a ``BertForSequenceClassification`` without dropout and its tokenizer.
Every rank writes ``OUTPUT_DIR/rank-<r>.json``; rank 0 also writes the final student weights
(``student.safetensors``) and the exported successor (``successor/``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # run as a script: tiny_bert lies next to it
    sys.path.insert(0, _TESTS)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny_bert import tiny_sentiment_dataset  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from loyalkit.callbacks import (  # noqa: E402
    DistillationCallback,
    LoyaltyCallback,
    MagnitudePruningCallback,
    ModuleReplacementCallback,
)
from loyalkit.compression import (  # noqa: E402
    ConstantReplacementSchedule,
    CubicSchedule,
    find_module_replacement,
    prepare_module_replacement,
    prunable_weights,
    sparsity,
)

GLOBAL_BATCH = 8
TRAIN_SIZE = 48  # 6 global batches: one epoch of MAX_STEPS, no partial batch
EVAL_SIZE = 21  # not a multiple of 2 x 4: the distributed eval sampler pads with duplicates
EVAL_BATCH = 4
MAX_LENGTH = 16
MAX_STEPS = 6
EVAL_STEPS = 3
PRUNING = CubicSchedule(target_sparsity=0.8, start_step=1, end_step=5, frequency=2)
REPLACEMENT = ConstantReplacementSchedule(rate=0.5, replacing_steps=4)


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names and raw bytes: equal only for bitwise-equal tensors."""
    sha = hashlib.sha256()
    for name in sorted(tensors):
        sha.update(name.encode())
        sha.update(tensors[name].detach().contiguous().cpu().numpy().tobytes())
    return sha.hexdigest()


class StepRecorder(TrainerCallback):
    """Zeros, sparsity and replacement rate after every optimizer step, on this rank's model."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        assert model is not None
        weights = prunable_weights(model).values()
        self.steps.append(
            {
                "step": state.global_step,
                "zeros": sum(int((w == 0).sum()) for w in weights),
                "total": sum(w.numel() for w in weights),
                "sparsity": sparsity(model),
                "replacement_rate": find_module_replacement(model).replacement_rate,
            }
        )


def sgd_args(output_dir: Path, rank: int, world_size: int, **overrides: Any) -> TrainingArguments:
    """Constant-rate SGD over :data:`GLOBAL_BATCH` split across the ranks (gloo), no checkpoints,
    seed 0: the same updates whatever the world size."""
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir / f"trainer-rank-{rank}"),
        per_device_train_batch_size=GLOBAL_BATCH // world_size,
        optim="sgd",
        learning_rate=10.0,  # SGD: small gradients of a tiny BERT need a large step
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_strategy="no",
        seed=0,
        data_seed=0,
        report_to="none",
        use_cpu=True,
        ddp_backend="gloo" if world_size > 1 else None,
        ddp_timeout=60,  # a hung collective fails within a minute instead of 30
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def main(teacher_dir: Path, output_dir: Path) -> None:
    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if GLOBAL_BATCH % world_size:
        raise ValueError(f"WORLD_SIZE={world_size} must divide the global batch {GLOBAL_BATCH}")
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    if tokenizer.convert_tokens_to_ids("movie") == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer in {teacher_dir} did not read its vocabulary")
    train_set = tiny_sentiment_dataset(tokenizer, n=TRAIN_SIZE, seed=0)
    eval_set = tiny_sentiment_dataset(tokenizer, n=EVAL_SIZE, seed=1)

    teacher = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
    if teacher.config.hidden_dropout_prob or teacher.config.attention_probs_dropout_prob:
        raise ValueError("the teacher must have no dropout: ranks would draw different masks")
    student = copy.deepcopy(teacher).train()
    prepare_module_replacement(student, num_successor_layers=2, seed=0)

    args = sgd_args(
        output_dir,
        rank,
        world_size,
        max_steps=MAX_STEPS,
        per_device_eval_batch_size=EVAL_BATCH,
        eval_strategy="steps",
        eval_steps=EVAL_STEPS,
        logging_steps=1,
    )
    pruning = MagnitudePruningCallback(PRUNING, scope="global")
    recorder = StepRecorder()
    trainer = Trainer(
        model=student,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorWithPadding(
            tokenizer, padding="max_length", max_length=MAX_LENGTH
        ),
        callbacks=[
            DistillationCallback(teacher, temperature=2.0, alpha=0.5),
            pruning,
            ModuleReplacementCallback(REPLACEMENT, export_dir=str(output_dir / "successor")),
            recorder,
        ],
    )
    loyalty = LoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    wrapper = type(trainer.model_wrapped).__name__
    final_eval = trainer.evaluate()

    model = trainer.model
    assert model is not None and pruning.masks is not None
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    result: dict[str, Any] = {
        "rank": rank,
        "world_size": world_size,
        "trainer_world_size": trainer.args.world_size,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "wrapper": wrapper,
        "per_device_train_batch_size": trainer.args.per_device_train_batch_size,
        "steps": recorder.steps,
        "log_history": trainer.state.log_history,
        "final_eval": final_eval,
        "sparsity": sparsity(model),
        "mask_sparsity": pruning.masks.sparsity,
        "mask_digest": digest(pruning.masks.masks),
        "weights_digest": digest(state),
        "teacher_passes": loyalty.teacher_passes,
    }
    (output_dir / f"rank-{rank}.json").write_text(json.dumps(result, indent=1))
    if rank == 0:
        save_file(state, str(output_dir / "student.safetensors"))
    if dist.is_initialized():
        dist.barrier()  # every rank's files exist before any rank exits


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: distributed_worker.py TEACHER_DIR OUTPUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
