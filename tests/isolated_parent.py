"""A user's process that attacks through the isolated worker and is then interrupted or killed.

Run by ``tests/test_isolated_faults.py``: ``python tests/isolated_parent.py FOLDER RESOURCES``.
It loads the saved classifier, starts a worker, prints ``worker <pid>`` and attacks with a model
slowed to 0.3 s per forward pass, so that the signal arrives while a job runs.
"""

from __future__ import annotations

import itertools
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, BertForSequenceClassification

from loyalkit.robustness import AttackConfig, AttackWorker, OfflineResources


class Slow(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Any) -> Any:
        time.sleep(0.3)
        return self.model(**inputs)


def main() -> int:
    # A terminal's Ctrl-C raises KeyboardInterrupt; a shell starts background jobs with SIGINT
    # ignored, and Python then installs no handler (a CI runner started that way failed this).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)
    folder, resources = Path(sys.argv[1]), Path(sys.argv[2])
    model = Slow(BertForSequenceClassification.from_pretrained(folder).eval())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    offline = OfflineResources(
        nltk_data=resources / "nltk_data", cache_dir=resources / "textattack"
    )
    worker = AttackWorker()
    worker.start()
    print(f"worker {worker.pid}", flush=True)
    # Distinct texts: TextAttack caches model outputs per text, so 50 copies of one sentence
    # finished within moments of the first and a signal sent then could arrive after the end.
    words = itertools.permutations(["music", "ending", "ugly", "the", "film"])
    rows = [(i, (" ".join(next(words)),), 1) for i in range(50)]
    config = AttackConfig(recipe="deepwordbug", num_examples=50, resources=offline)
    worker.attack(
        model, tokenizer, rows, config, on_example=lambda done: print("done", done, flush=True)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
