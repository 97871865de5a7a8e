"""``loyalkit attack prepare-data``: writes the offline resources and says how to use them."""

from __future__ import annotations

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
    assert "OfflineResources(nltk_data=" in out and "build_attack(" in out


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
