"""``loyalkit attack prepare-data`` writes the offline resources and says how to use them;
``loyalkit attack run`` attacks a saved model on a data file (single sentences and MNLI pairs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loyalkit.cli import main

LEXNAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "wordnet" / "lexnames"
DEBIAN_WORDNET = Path("/usr/share/wordnet")


def test_prepare_data_stop_words_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    target, cache = tmp_path / "nltk", tmp_path / "cache"
    status = main(
        ["attack", "prepare-data", "--target", str(target), "--cache-dir", str(cache)]
        + ["--no-wordnet"]
    )
    assert status == 0
    words = (target / "corpora" / "stopwords" / "english").read_text().split()
    assert set(words) == set(ENGLISH_STOP_WORDS)
    assert (cache / "post_install_check_3").is_file()
    assert not (target / "corpora" / "wordnet").exists()
    out = capsys.readouterr().out
    assert str(target.resolve()) in out and str(cache.resolve()) in out
    assert "OfflineResources(nltk_data=" in out
    assert "deepwordbug:        ready" in out and "pwws-offline:       lacks WordNet" in out


def test_prepare_data_with_wordnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "nltk"
    argv = ["attack", "prepare-data", "--target", str(target), "--lexnames", str(LEXNAMES)]
    assert main(argv + ["--cache-dir", str(tmp_path / "cache")]) == 0
    wordnet = target / "corpora" / "wordnet"
    assert (wordnet / "data.noun").read_bytes() == (DEBIAN_WORDNET / "data.noun").read_bytes()
    assert (wordnet / "lexnames").read_bytes() == LEXNAMES.read_bytes()
    assert str(wordnet.resolve()) in capsys.readouterr().out


def test_prepare_data_reports_a_missing_wordnet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "prepare-data", "--target", str(tmp_path / "nltk")]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--wordnet-dir", str(tmp_path / "nothing")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "loyalkit attack: error:" in err
    assert "wordnet-base" in err and "--no-wordnet" in err


def test_wordnet_options_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["attack", "prepare-data", "--no-wordnet", "--wordnet-dir", str(tmp_path)])


def test_attack_run_on_a_saved_model_and_a_tsv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON's numbers against its own records and the model re-run here on every text."""
    import json

    import torch
    from attack_helpers import make_classifier, offline_resources
    from tiny_bert import tiny_sentiment_texts
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.set_num_threads(1)
    folder = make_classifier(tmp_path / "model", steps=10)
    resources = offline_resources(tmp_path / "resources")
    texts, labels = tiny_sentiment_texts(40, seed=5)
    data = tmp_path / "dev.tsv"
    data.write_text(
        "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True))
    )
    out = tmp_path / "out" / "attack.json"
    argv = ["attack", "run", "--model", str(folder), "--data", str(data), "--examples", "8"]
    argv += ["--nltk-data", str(resources.nltk_data), "--cache-dir", str(resources.cache_dir)]
    assert main([*argv, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    examples = result["examples"]
    assert result["num_attacked"] == len(examples) == 8 and result["recipe"] == "deepwordbug"
    statuses = [e["status"] for e in examples]
    assert result["after_attack_accuracy"] == statuses.count("failed") / 8
    assert result["success_rate"] == statuses.count("succeeded") / (8 - statuses.count("skipped"))
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def predict(batch: list[str]) -> list[int]:
        with torch.no_grad():
            encoded = tokenizer(batch, padding=True, return_tensors="pt")
            return model(**encoded).logits.argmax(-1).tolist()

    original = predict([e["original_text"] for e in examples])
    gold = [e["ground_truth"] for e in examples]
    assert (
        result["original_accuracy"] == sum(o == g for o, g in zip(original, gold, strict=True)) / 8
    )
    assert all(e["ground_truth"] == labels[texts.index(e["original_text"])] for e in examples)
    fooled = [e for e in examples if e["status"] == "succeeded"]
    assert fooled
    assert all(
        p != e["ground_truth"]
        for p, e in zip(predict([e["perturbed_text"] for e in fooled]), fooled, strict=True)
    )
    assert "| after_attack_accuracy |" in printed and str(out) in printed


def test_attack_run_names_a_missing_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "run", "--model", str(tmp_path), "--data", str(tmp_path / "x.tsv")]
    assert main([*argv, "--output", str(tmp_path / "o.json")]) == 1
    assert "--model" in capsys.readouterr().err


MNLI = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnli_textfooler"
#: GLUE's MNLI label order (not the sorted one), so the mapping through label2id is exercised.
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def read_mnli(name: str, n: int) -> list[tuple[str, str, str]]:
    """The first ``n`` rows of a TextFooler MNLI file: ``(label, premise, hypothesis)``."""
    lines = (MNLI / name).read_text(encoding="utf-8").splitlines()[:n]
    return [tuple(line.split("\t")) for line in lines]  # type: ignore[misc]


def make_pair_classifier(folder: Path, pairs: list[tuple[str, str, str]], steps: int) -> Path:
    """A tiny 3-label BERT over a word vocabulary of ``pairs``, fitted to them, saved."""
    import torch
    from tiny_bert import SPECIAL_TOKENS, tiny_bert
    from transformers import BertTokenizerFast

    torch.set_num_threads(1)
    folder.mkdir(parents=True)
    # Words and punctuation, lower-cased, as BERT's basic tokenizer splits them; others are [UNK].
    words = sorted({w for _, p, h in pairs for w in re.findall(r"\w+|[^\w\s]", f"{p} {h}".lower())})
    (folder / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, *words]) + "\n")
    vocab = str(folder / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab_file=vocab, vocab=vocab, model_max_length=64)
    assert tokenizer.convert_tokens_to_ids(words[0]) != tokenizer.unk_token_id
    tokenizer.save_pretrained(folder)
    model = tiny_bert(num_labels=3, seed=0, vocab_size=len(tokenizer)).train()
    model.config.id2label = dict(enumerate(MNLI_LABELS))
    model.config.label2id = {name: i for i, name in enumerate(MNLI_LABELS)}
    batch = tokenizer(
        [p for _, p, _ in pairs], [h for _, _, h in pairs], padding=True, truncation=True,
        return_tensors="pt",
    )  # fmt: skip
    labels = torch.tensor([MNLI_LABELS.index(y) for y, _, _ in pairs])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder)
    return folder


def test_attack_run_on_mnli_sentence_pairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real MNLI pairs (TextFooler's attack set) through `--text-pair-column`: labels mapped by
    the model's names, both texts reach the model, the numbers match the model re-run here."""
    import json

    import torch
    from attack_helpers import offline_resources
    from transformers import AutoTokenizer, BertForSequenceClassification

    pairs = read_mnli("mnli_matched_1000.tsv", 60)
    # Fitted to these very pairs: most are classified right, so most get attacked.
    folder = make_pair_classifier(tmp_path / "model", pairs, steps=30)
    data = tmp_path / "mnli.tsv"
    data.write_text(
        "gold\tpremise\thypothesis\n" + "".join("\t".join(row) + "\n" for row in pairs),
        encoding="utf-8",
    )
    resources = offline_resources(tmp_path / "resources")
    out = tmp_path / "attack.json"
    argv = ["attack", "run", "--model", str(folder), "--data", str(data), "--examples", "10"]
    argv += ["--text-column", "premise", "--text-pair-column", "hypothesis"]
    argv += ["--label-column", "gold", "--seed", "3", "--output", str(out)]
    argv += ["--nltk-data", str(resources.nltk_data), "--cache-dir", str(resources.cache_dir)]
    assert main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    examples = result["examples"]
    assert result["text_columns"] == ["premise", "hypothesis"]
    assert result["num_attacked"] + result["num_skipped"] + result["num_errors"] == 10
    assert result["num_errors"] == 0 and result["num_attacked"] > 0

    model = BertForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def predict(joined: list[str]) -> list[int]:
        split = [text.split("\n") for text in joined]
        assert all(len(parts) == 2 for parts in split)  # premise and hypothesis, both there
        with torch.no_grad():
            encoded = tokenizer(
                [p for p, _ in split], [h for _, h in split], padding=True, truncation=True,
                return_tensors="pt",
            )  # fmt: skip
            return model(**encoded).logits.argmax(-1).tolist()

    by_text = {f"{p}\n{h}": MNLI_LABELS.index(y) for y, p, h in pairs}
    assert [e["ground_truth"] for e in examples] == [by_text[e["original_text"]] for e in examples]
    original = predict([e["original_text"] for e in examples])
    assert original == [e["original_label"] for e in examples]
    gold = [e["ground_truth"] for e in examples]
    assert result["original_accuracy"] == sum(map(int.__eq__, original, gold)) / 10
    statuses = [e["status"] for e in examples]
    assert result["after_attack_accuracy"] == statuses.count("failed") / 10
    fooled = [e for e in examples if e["status"] == "succeeded"]
    assert fooled, "the attack fooled the tiny model on no pair"
    after = predict([e["perturbed_text"] for e in fooled])
    assert after == [e["perturbed_label"] for e in fooled]
    assert all(a != e["ground_truth"] for a, e in zip(after, fooled, strict=True))
    assert "| after_attack_accuracy |" in capsys.readouterr().out
