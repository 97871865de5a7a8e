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
