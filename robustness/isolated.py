"""Attack a model of this process with TextAttack running in its isolated environment.

:class:`AttackWorker` starts :mod:`loyalkit.robustness.attack_worker` on the interpreter of the
environment ``loyalkit attack setup`` built (:mod:`loyalkit.robustness.attack_env`), once, and
keeps it for every later attack (TextAttack's import costs 5-7 s). For each attack it sends the
rows and the settings; the worker runs TextAttack's search (recipe, constraints, goal function,
bookkeeping) and asks for model outputs, which this process computes with
:func:`~loyalkit.robustness.model_wrapper.predict_logits` (dynamic padding, eval mode, no
autograd) on the model as it is: int8, pruned, on a GPU, wrapped by DDP. The model never leaves
this process and nothing is saved or reloaded.

Faults: a worker that cannot start, dies, or sends nothing for ``timeout_s`` seconds raises
:class:`WorkerError` (with the end of its error output) and is killed; the next attack starts a
fresh one. Any exception here (Ctrl-C included) while a job runs kills the worker, since its
protocol state is then unknown. :meth:`AttackWorker.close` (also at garbage collection and at
interpreter exit) ends it; the worker also ends by itself when this process dies.

Example:
    >>> from loyalkit.robustness.isolated import AttackWorker
    >>> # with AttackWorker() as worker:
    >>> #     report = worker.attack_model(model, tokenizer, dev_set, AttackConfig("deepwordbug"))
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import torch
from torch import nn

from loyalkit.robustness import protocol
from loyalkit.robustness.attack_env import find_environment
from loyalkit.robustness.attack_runner import AttackConfig, AttackReport, sample_rows
from loyalkit.robustness.isolated_job import config_to_message
from loyalkit.robustness.model_wrapper import predict_logits

__all__ = ["AttackWorker", "WorkerError", "worker_script"]

logger = logging.getLogger(__name__)

#: Seconds to wait for the worker's first message, and for the first message of each job (which
#: may import TextAttack, 5-7 s, and build the recipe: load WordNet, the sentence encoder).
START_TIMEOUT_S = 180.0
_TAIL_CHARS = 3000


class WorkerError(RuntimeError):
    """The attack worker could not be started, died, hung or failed the job."""


def worker_script() -> Path:
    """The worker's file (next to this module, in a checkout or a wheel)."""
    return Path(__file__).resolve().parent / "attack_worker.py"


def _loyalkit_dir() -> Path:
    import loyalkit

    return Path(loyalkit.__file__).resolve().parent


def _kill(process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    for stream in (process.stdin, process.stdout):
        if stream is not None and not stream.closed:
            stream.close()
    if not log.closed:
        log.close()


class AttackWorker:
    """One long-lived TextAttack worker in the isolated environment (see the module doc).

    Args:
        python: the worker's interpreter (default: the one ``loyalkit attack setup`` recorded in
            ``env_dir``).
        env_dir: the environment's folder (default ``$LOYALKIT_ATTACK_ENV`` or the user cache).
        timeout_s: the most seconds to wait for any message of the worker (each model query,
            each example) once its job's recipe is built (start and build may take up to
            ``START_TIMEOUT_S``); past it the worker counts as hung and is killed.
    """

    def __init__(
        self,
        python: str | Path | None = None,
        *,
        env_dir: str | Path | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ValueError(f"`timeout_s` must be a positive number of seconds, got {timeout_s!r}")
        self.python = Path(python) if python is not None else None
        self.env_dir = Path(env_dir) if env_dir is not None else None
        self.timeout_s = float(timeout_s)
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        """The running worker's process id, else ``None``."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def __enter__(self) -> AttackWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the worker unless it runs (raises :class:`WorkerError` if it cannot)."""
        if self.pid is not None:
            return
        self._discard()
        try:
            python = self.python or find_environment(self.env_dir).python
        except FileNotFoundError as error:
            raise WorkerError(str(error)) from None
        if not Path(python).is_file():
            raise WorkerError(f"the attack worker's interpreter {python} does not exist")
        # The worker's stderr; kept open for its lifetime, closed by _kill.
        log = tempfile.TemporaryFile(prefix="loyalkit-attack-worker-")  # noqa: SIM115
        command = [str(python), "-I", str(worker_script()), "--loyalkit-dir", str(_loyalkit_dir())]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0
            )
        except OSError as error:
            log.close()
            raise WorkerError(
                f"could not start the attack worker ({command[0]}): {error}"
            ) from None
        self._process, self._log = process, log
        self._finalizer = weakref.finalize(self, _kill, process, log)
        self.starts += 1
        hello = self._receive(START_TIMEOUT_S)
        if hello["op"] != "ready":
            self._fail(f"the worker started with {hello['op']!r} instead of 'ready'")
        logger.info("attack worker %d started on %s", process.pid, python)

    def close(self) -> None:
        """End the worker (politely, then by force); a later attack starts a new one."""
        process = self._process
        if process is not None and process.poll() is None and process.stdin is not None:
            try:
                protocol.write_message(process.stdin.fileno(), {"op": "close"})
                process.wait(timeout=5)
            except (protocol.ProtocolError, subprocess.TimeoutExpired, ValueError):
                pass
        self._discard()

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # kills if still alive, reaps, closes the pipes
        self._process, self._log, self._finalizer = None, None, None

    def _tail(self) -> str:
        log = self._log
        if log is None or log.closed:
            return ""
        log.flush()
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        return text[-_TAIL_CHARS:].strip()

    def _fail(self, reason: str) -> NoReturn:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        code = process.returncode if process is not None else None
        tail = self._tail()
        self._discard()
        detail = f" (exit status {code})" if code is not None else ""
        raise WorkerError(
            f"attack worker: {reason}{detail}" + (f"; its last output:\n{tail}" if tail else "")
        )

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            return protocol.read_message(process.stdout.fileno(), timeout_s)
        except protocol.WorkerTimeout:
            self._fail(f"no message for {timeout_s:g} s: the worker hung and was killed")
        except protocol.ProtocolError as error:
            self._fail(f"the worker died or broke the protocol ({error})")

    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            protocol.write_message(process.stdin.fileno(), message)
        except protocol.ProtocolError as error:
            self._fail(f"the worker died ({error})")

    def attack(
        self,
        model: nn.Module,
        tokenizer: Any,
        rows: Sequence[tuple[int, tuple[str, ...], int]],
        config: AttackConfig,
        text_columns: Sequence[str] = ("sentence",),
        *,
        on_example: Callable[[int], None] | None = None,
    ) -> AttackReport:
        """Attack ``rows`` (from :func:`~loyalkit.robustness.attack_runner.sample_rows`) of
        ``model`` with ``config``; the same numbers as ``run_attack`` in one process.
        ``on_example(done)`` is called after each example. ``report.results`` (TextAttack's
        objects) stays empty: they live in the worker."""
        if not isinstance(config, AttackConfig):
            raise TypeError(f"`config` must be an AttackConfig, got {type(config).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
        self.start()
        job = {
            "op": "attack",
            "config": config_to_message(config),
            "rows": [[int(i), list(texts), int(label)] for i, texts, label in rows],
            "text_columns": list(text_columns),
            # The worker computes (sentence encoder, constraints) while this process waits:
            # it uses as many threads as this process does.
            "torch_threads": torch.get_num_threads(),
        }
        try:
            self._send(job)
            timeout_s = max(self.timeout_s, START_TIMEOUT_S)  # until the recipe is built
            while True:
                message = self._receive(timeout_s)
                timeout_s = self.timeout_s
                op = message["op"]
                if op == "query":
                    self._answer(model, tokenizer, message["texts"], config.batch_size)
                elif op == "progress":
                    if on_example is not None:
                        on_example(int(message["done"]))
                elif op == "report":
                    return AttackReport(
                        summary=message["summary"],
                        examples=message["examples"],
                        recipe=config.recipe,
                        text_columns=tuple(text_columns),
                        seed=config.seed,
                        stop_reason=message["stop_reason"],
                        elapsed_s=float(message["elapsed_s"]),
                    )
                elif op == "failed":
                    raise WorkerError(f"the attack failed in the worker: {message.get('error')}")
                else:
                    self._fail(f"unexpected message {op!r}")
        except WorkerError:
            raise
        except BaseException:
            # Ctrl-C or an error of ours mid-job: the worker waits for an answer it will not get.
            self._discard()
            raise

    def _answer(self, model: nn.Module, tokenizer: Any, texts: list[Any], batch_size: int) -> None:
        inputs = [tuple(t) if isinstance(t, list) else t for t in texts]
        try:
            logits = predict_logits(model, tokenizer, inputs, batch_size)
        except Exception as error:  # the model's failure is the example's, as in one process
            self._send({"op": "model_error", "error": f"{type(error).__name__}: {error}"})
            return
        self._send({"op": "scores", **protocol.encode_array(logits.numpy())})

    def attack_model(
        self,
        model: nn.Module,
        tokenizer: Any,
        dataset: Any,
        config: AttackConfig | None = None,
        *,
        text_columns: Sequence[str] = ("sentence",),
        label_column: str = "label",
    ) -> AttackReport:
        """``attack_runner.attack_model`` through this worker: the same seeded sample."""
        config = AttackConfig() if config is None else config
        rows = sample_rows(dataset, config.num_examples, config.seed, text_columns, label_column)
        return self.attack(model, tokenizer, rows, config, text_columns)
