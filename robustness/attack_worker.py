"""The attack worker: TextAttack's search in the isolated environment, the model in the user's.

Started by :class:`loyalkit.robustness.isolated.AttackWorker` as
``<isolated python> -I attack_worker.py --loyalkit-dir DIR``, by file path, so that it needs no
installed loyalkit: it registers ``loyalkit`` (``DIR``) and ``loyalkit.robustness`` (this file's
folder) as bare packages, without running their ``__init__``, and imports only the attack modules
(``attack_runner``, ``recipes`` and what they use: torch, transformers < 5, TextAttack). This works
the same from an editable checkout (``robustness/``) and from a wheel
(``site-packages/loyalkit/robustness``).

Protocol (:mod:`loyalkit.robustness.protocol`, on the worker's stdin and its original stdout; its
own prints go to stderr): the worker says ``ready``; for each ``attack`` job it builds the recipe
(kept for later jobs with the same settings; the model-output cache is cleared each job), runs
``attack_runner.run_attack`` with a model wrapper that sends every batch of texts as a ``query``
and waits for its ``scores`` (or ``model_error``, raised in the search as the model's own error
would be), sends ``progress`` after each example and the ``report`` at the end (``failed`` if the
job could not start). ``close`` or the end of stdin ends it; so does the death of the user's
process (its parent id changes), so no worker outlives the process it serves. Ctrl-C in the
terminal is ignored here: the user's process decides.

Nothing at module level imports more than the standard library.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
import types
from pathlib import Path
from typing import Any

PARENT_POLL_S = 0.5


def _register_packages(loyalkit_dir: Path) -> None:
    """``loyalkit`` and ``loyalkit.robustness`` as bare packages over their folders."""
    robustness_dir = Path(__file__).resolve().parent
    for name, folder in (("loyalkit", loyalkit_dir), ("loyalkit.robustness", robustness_dir)):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]
        module.__file__ = str(folder / "__init__.py")
        sys.modules[name] = module
    sys.modules["loyalkit"].robustness = sys.modules["loyalkit.robustness"]  # type: ignore[attr-defined]


def _watch_parent(parent: int) -> None:
    """End the process once the user's process is gone (it is then re-parented)."""
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:
            os._exit(3)


class _Channel:
    """The two pipe ends of the protocol."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        from loyalkit.robustness import protocol

        self.protocol = protocol
        self.read_fd = read_fd
        self.write_fd = write_fd

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.write_message(self.write_fd, message)

    def receive(self) -> dict[str, Any]:
        return self.protocol.read_message(self.read_fd)


class RemoteModelError(RuntimeError):
    """The user's process could not compute the model's outputs for a batch."""


class ParentGone(BaseException):
    """The user's process closed the pipe: not an example's error, the end of the worker (a
    ``BaseException``, so that no ``except Exception`` in the search swallows it)."""


def _remote_wrapper_class(base: type) -> type:
    """TextAttack's ``ModelWrapper`` contract (texts in, scores out) over the channel."""

    class RemoteModelWrapper(base):
        def __init__(self, channel: _Channel) -> None:
            self.channel = channel
            self.model = None  # the model lives in the user's process
            self.deadline: float | None = None
            self.clock = time.monotonic

        def __call__(self, text_input_list: list[Any]) -> Any:
            from loyalkit.robustness.model_wrapper import TimeBudgetExceeded

            if self.deadline is not None and self.clock() > self.deadline:
                raise TimeBudgetExceeded("the attack's time budget is spent")
            texts = [list(t) if isinstance(t, tuple) else t for t in text_input_list]
            try:
                self.channel.send({"op": "query", "texts": texts})
                reply = self.channel.receive()
            except self.channel.protocol.ProtocolError as error:
                raise ParentGone(str(error)) from None
            if reply["op"] == "model_error":
                raise RemoteModelError(reply.get("error", "the model failed"))
            if reply["op"] != "scores":
                raise self.channel.protocol.ProtocolError(f"expected scores, got {reply['op']!r}")
            return self.channel.protocol.decode_array(reply)

        def get_grad(self, text_input: Any) -> Any:
            raise NotImplementedError("the isolated worker runs black-box attacks only")

        def _tokenize(self, inputs: Any) -> Any:
            raise NotImplementedError("the isolated worker runs black-box attacks only")

    return RemoteModelWrapper


class _Worker:
    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.attacks: dict[str, Any] = {}

    def attack(self, job: dict[str, Any]) -> dict[str, Any]:
        from loyalkit.robustness.attack_runner import configure_attack, run_attack
        from loyalkit.robustness.isolated_job import config_from_message
        from loyalkit.robustness.textattack_setup import import_textattack

        config = config_from_message(job["config"])
        threads = job.get("torch_threads")
        if isinstance(threads, int) and threads > 0:
            import torch

            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        key = repr(job["config"])
        attack = self.attacks.get(key)
        if attack is None:
            textattack = import_textattack(config.resources)
            wrapper = _remote_wrapper_class(textattack.models.wrappers.ModelWrapper)(self.channel)
            attack = configure_attack(wrapper, config)
            self.attacks[key] = attack
        else:
            # Another model, or new weights: forget the cached model outputs only.
            attack.goal_function.clear_cache()
        self._progress(0)  # built: from here on the user's process applies its time-out
        rows = [(int(i), tuple(texts), int(label)) for i, texts, label in job["rows"]]
        report = run_attack(
            attack,
            rows,
            config,
            tuple(job["text_columns"]),
            on_example=self._progress,
        )
        return {
            "op": "report",
            "summary": report.summary,
            "examples": report.examples,
            "stop_reason": report.stop_reason,
            "elapsed_s": report.elapsed_s,
        }

    def _progress(self, done: int) -> None:
        try:
            self.channel.send({"op": "progress", "done": done})
        except self.channel.protocol.ProtocolError as error:
            raise ParentGone(str(error)) from None

    def serve(self) -> int:
        self.channel.send({"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
        while True:
            try:
                message = self.channel.receive()
            except self.channel.protocol.ProtocolError:
                return 0  # stdin closed: the user's process is done
            if message["op"] == "close":
                return 0
            if message["op"] != "attack":
                self.channel.send({"op": "failed", "error": f"unknown op {message['op']!r}"})
                continue
            try:
                reply = self.attack(message)
            except (ParentGone, self.channel.protocol.ProtocolError):
                return 0
            except Exception as error:
                traceback.print_exc(file=sys.stderr)
                reply = {"op": "failed", "error": f"{type(error).__name__}: {error}"}
            try:
                self.channel.send(reply)
            except self.channel.protocol.ProtocolError:
                return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--loyalkit-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # The protocol keeps the original stdout; anything printed goes to stderr.
    write_fd = os.dup(1)
    os.dup2(2, 1)
    _register_packages(args.loyalkit_dir)
    return _Worker(_Channel(0, write_fd)).serve()


if __name__ == "__main__":
    sys.exit(main())
