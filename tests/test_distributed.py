"""The callbacks under ``torchrun`` and ``accelerate launch`` with 2 CPU processes (gloo).

``tests/distributed_worker.py`` trains a tiny BERT with DistillationCallback, MagnitudePruningCallback,
ModuleReplacementCallback (exporting the successor) and LoyaltyCallback; it runs once as a single
process and once per launcher with 2 processes. The global batch is the same (8 x 1 = 4 x 2: the
sharded sampler gives the ranks the two halves of the single process's batch), dropout is off,
inputs are padded to one length and SGD (no clipping) follows the gradient's scale, so the runs
differ only by float summation order, and the comparison is:

- every rank agrees exactly (masks, weights, sparsity, eval metrics): DDP keeps them in sync and
  the loyalty metrics are computed from logits gathered across ranks;
- sparsity is exactly the schedule's (by hand) and the single process's, on every rank;
- the train losses, eval loyalty metrics, final weights and the exported successor's predictions
  equal the single process's within float tolerance;
- the loyalty metrics equal sklearn/scipy on the exported successor and the teacher over all 21
  eval examples (the distributed eval pads 21 to 24: the duplicates must be dropped).

Every subprocess runs under a timeout (process group killed), and a nonzero exit fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from safetensors.torch import load_file
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import accuracy_score
from tiny_bert import tiny_bert_config, tiny_sentiment_texts, tiny_tokenizer
from transformers import AutoTokenizer, BertForSequenceClassification, PreTrainedTokenizerBase

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
RUN_TIMEOUT_S = 120
EVAL_SIZE, EVAL_SEED, MAX_LENGTH = 21, 1, 16  # as in the worker
MAX_STEPS, EVAL_STEPS = 6, 3
# The worker's cubic schedule s(t) = 0.8 - 0.8 * (1 - (t_k - 1) / 4) ** 3 with
# t_k = 1 + 2 * floor((t - 1) / 2) (target 0.8, steps 1..5, every 2), by hand: 0.8 - 0.8 / 8 = 0.7.
SPARSITY_BY_HAND = {1: 0.0, 2: 0.0, 3: 0.7, 4: 0.7, 5: 0.8, 6: 0.8}
# Global scope prunes round(s * total) weights of the 6 encoder layers (4 frozen predecessor + 2
# successor), each 4 x 32 x 32 + 2 x 32 x 64 weights.
PRUNED_TOTAL = 6 * (4 * 32 * 32 + 2 * 32 * 64)
# The worker's constant replacement schedule (p = 0.5 for steps 0..3, then 1), as logged.
RATE_BY_HAND = {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 1.0, 6: 1.0}
LOYALTY_KEYS = (
    "eval_label_loyalty",
    "eval_probability_loyalty",
    "eval_kl_divergence",
    "eval_flips",
    "eval_student_accuracy",
    "eval_teacher_accuracy",
)
# Float32 results of the same math summed in another order (a batch of 8 vs two of 4 plus an
# all-reduce): seen at most 1.2e-7 on weights, 3e-8 on losses, 1e-9 on the metrics. SGD moves the
# successor's weights by up to ~0.05, so a wrong loss scale or other draws cannot hide in these.
RTOL, ATOL = 1e-5, 1e-6
# transformers 4.57 rounds the logged losses to 4 decimals: values 1e-7 apart may round 1e-4 apart.
LOSS_ATOL = 1.1e-4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_teacher(folder: Path) -> Path:
    """A tiny 4-layer BERT without dropout fine-tuned on the toy sentiment task, with its tokenizer."""
    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(folder)
    texts, labels = tiny_sentiment_texts(96, seed=2)
    inputs = tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    config = tiny_bert_config(num_labels=2, num_layers=4)
    config.hidden_dropout_prob = 0.0
    config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(1)
    teacher = BertForSequenceClassification(config).train()
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for _ in range(16):  # not to convergence: the teacher is right on 81% of the eval set
        teacher(**inputs, labels=torch.tensor(labels)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    teacher.eval().save_pretrained(folder)
    return folder


def kill_tree(pid: int) -> None:
    """Kill a process and all its descendants (torchrun starts its workers in new sessions)."""
    try:
        root = psutil.Process(pid)
        family = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(family, timeout=10)


def run(command: list[str], log: Path, timeout: float = RUN_TIMEOUT_S) -> None:
    """Run ``command``; fail on a nonzero exit, and kill its whole tree and fail on timeout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)  # not yet reaped: the pid is still this process's
            pytest.fail(f"{command[:4]} did not finish in {timeout} s:\n{log.read_text()[-3000:]}")
    if code != 0:
        pytest.fail(f"{command[:4]} exited with {code}:\n{log.read_text()[-3000:]}")


def without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second"))}


def read_ranks(folder: Path, world_size: int) -> list[dict[str, Any]]:
    results = [json.loads((folder / f"rank-{r}.json").read_text()) for r in range(world_size)]
    assert [r["rank"] for r in results] == list(range(world_size))
    return results


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_teacher(tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def single(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run([sys.executable, str(WORKER), str(teacher_dir), str(out)], out / "log.txt")
    return out


LAUNCHERS = {
    "torchrun": lambda port: [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
    ],
    # `accelerate launch --cpu` starts one process (several CPU processes need mpirun and a
    # hostfile); `--multi_gpu` starts them through torch's elastic launcher, and the worker's
    # `use_cpu=True` makes accelerate run them as MULTI_CPU over gloo (asserted below).
    "accelerate": lambda port: [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={port}",
    ],
}


def eval_logits(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    texts, _ = tiny_sentiment_texts(EVAL_SIZE, seed=EVAL_SEED)
    inputs = tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**inputs).logits.double().numpy()


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_match_one(
    launcher: str, teacher_dir: Path, single: Path, tmp_path: Path
) -> None:
    out = tmp_path / launcher
    out.mkdir()
    command = [*LAUNCHERS[launcher](free_port()), str(WORKER), str(teacher_dir), str(out)]
    run(command, out / "log.txt")

    (one,) = read_ranks(single, 1)
    ranks = read_ranks(out, 2)

    # Really distributed: 2 ranks over gloo, DDP-wrapped, half the batch each.
    assert one["wrapper"] == "BertForSequenceClassification" and one["backend"] is None
    for result in ranks:
        assert result["world_size"] == result["trainer_world_size"] == 2
        assert result["backend"] == "gloo"
        assert result["wrapper"] == "DistributedDataParallel"
        assert result["per_device_train_batch_size"] == 4

    # The ranks agree exactly: same masks and weights bit for bit, same metrics and logs.
    for key in ("mask_digest", "weights_digest", "sparsity", "steps", "teacher_passes"):
        assert ranks[0][key] == ranks[1][key], key
    assert without_timings(ranks[0]["final_eval"]) == without_timings(ranks[1]["final_eval"])
    history = [[without_timings(entry) for entry in r["log_history"]] for r in ranks]
    assert history[0] == history[1]

    # Zeros after every step: the schedule by hand, exactly, as the single process.
    for result in (one, *ranks):
        assert [s["step"] for s in result["steps"]] == list(range(1, MAX_STEPS + 1))
        for entry in result["steps"]:
            assert entry["total"] == PRUNED_TOTAL
            assert entry["zeros"] == round(SPARSITY_BY_HAND[entry["step"]] * PRUNED_TOTAL), entry
            assert entry["replacement_rate"] == RATE_BY_HAND[entry["step"]], entry
        assert (
            result["sparsity"]
            == result["mask_sparsity"]
            == round(0.8 * PRUNED_TOTAL) / PRUNED_TOTAL
        )
    assert ranks[0]["steps"] == one["steps"]

    # Train losses (KD + CE, normalised over the global batch) match step by step.
    def losses(result: dict[str, Any]) -> list[float]:
        return [e["loss"] for e in result["log_history"] if "loss" in e]

    assert len(losses(one)) == MAX_STEPS
    np.testing.assert_allclose(losses(ranks[0]), losses(one), rtol=RTOL, atol=LOSS_ATOL)

    # Eval loyalty at steps 3 and 6 and after training (evaluate() logs too); the teacher ran
    # once per process, its logits were reused.
    def evals(result: dict[str, Any]) -> list[dict[str, float]]:
        history = [e for e in result["log_history"] if "eval_label_loyalty" in e]
        assert [e["step"] for e in history] == [EVAL_STEPS, MAX_STEPS, MAX_STEPS]
        assert all(history[-1][key] == result["final_eval"][key] for key in LOYALTY_KEYS)
        return history

    for distributed, alone in zip(evals(ranks[0]), evals(one), strict=True):
        for key in LOYALTY_KEYS:
            np.testing.assert_allclose(
                distributed[key], alone[key], rtol=RTOL, atol=ATOL, err_msg=key
            )
    assert one["teacher_passes"] == ranks[0]["teacher_passes"] == ranks[1]["teacher_passes"] == 1

    # Final weights of the whole prepared model (successor, frozen predecessor, head), and the
    # same pruning masks (recomputed at steps 3 and 5 from weights equal to ~1e-7).
    weights_one = load_file(str(single / "student.safetensors"))
    weights_two = load_file(str(out / "student.safetensors"))
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        torch.testing.assert_close(weights_two[name], weights_one[name], rtol=RTOL, atol=ATOL)
    assert ranks[0]["mask_digest"] == one["mask_digest"]
    # Training really moved the successor (initialised from the teacher's bottom layers) far
    # beyond the tolerance: the comparison above is not between untouched weights.
    teacher_weights = load_file(str(teacher_dir / "model.safetensors"))
    for name in (
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.output.dense.weight",
    ):
        kept = weights_two[name] != 0
        assert (weights_two[name] - teacher_weights[name])[kept].abs().max() > 1e-3, name

    # The exported successors: 2-layer models of the normal class with the same predictions.
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    logits_one = eval_logits(single / "successor", tokenizer)
    logits_two = eval_logits(out / "successor", tokenizer)
    np.testing.assert_allclose(logits_two, logits_one, rtol=RTOL, atol=ATOL)

    # The logged loyalty is the exported successor's against the teacher over all 21 examples,
    # computed independently (sklearn, scipy): duplicates of the padded distributed eval dropped.
    teacher = eval_logits(teacher_dir, tokenizer)
    _, labels = tiny_sentiment_texts(EVAL_SIZE, seed=EVAL_SEED)
    final = ranks[0]["final_eval"]
    expected = {
        "eval_label_loyalty": accuracy_score(teacher.argmax(1), logits_two.argmax(1)),
        "eval_probability_loyalty": float(
            np.mean(
                1 - jensenshannon(softmax(teacher, axis=1), softmax(logits_two, axis=1), axis=1)
            )
        ),
        "eval_student_accuracy": accuracy_score(labels, logits_two.argmax(1)),
        "eval_teacher_accuracy": accuracy_score(labels, teacher.argmax(1)),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(final[key], value, rtol=RTOL, atol=ATOL, err_msg=key)
    # Not a trivial comparison: the pruned 2-layer successor is not the teacher.
    assert final["eval_probability_loyalty"] < 0.99
