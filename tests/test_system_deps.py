"""The system files the suite reads are installed, or the failure names the package to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import system_deps

from loyalkit.robustness.textattack_setup import (
    MissingResourceError,
    OfflineResources,
    find_nltk_resource,
    prepare_nltk_data,
)
from loyalkit.robustness.wordnet_files import WORDNET_FILES

LEXNAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "wordnet" / "lexnames"


@pytest.mark.parametrize(
    "path,package", sorted(system_deps.system_files().items()), ids=lambda v: str(v)
)
def test_system_file_is_installed(path: Path, package: str) -> None:
    assert path.is_file(), f"{path} is missing: install Debian's {package} (make system-deps does)"


def test_wordnet_table_covers_every_file_nltk_opens() -> None:
    # WordNetCorpusReader opens each of its _FILES when it is built (a missing one is an OSError
    # there, in every WordNet recipe): the table must name a package for each, lexnames aside.
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    assert set(WordNetCorpusReader._FILES) == set(WORDNET_FILES) | {"lexnames"}


def test_check_names_the_package_of_a_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(system_deps, "WORDNET_DIR", tmp_path)
    (tmp_path / "data.noun").write_text("")
    missing = system_deps.missing_files()
    assert missing[tmp_path / "index.sense"] == "wordnet-sense-index"
    assert missing[tmp_path / "data.verb"] == "wordnet-base"
    assert tmp_path / "data.noun" not in missing


def test_script_runs_with_a_bare_python() -> None:
    # make system-deps runs it with the system Python, before any virtual environment exists.
    script = Path(system_deps.__file__)
    result = subprocess.run(
        [sys.executable, "-I", str(script), "--missing-packages"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = not system_deps.missing_files()
    assert (result.stdout.strip() == "") == installed


def test_prepare_data_names_the_package_of_a_missing_wordnet_file(tmp_path: Path) -> None:
    partial = tmp_path / "wordnet"
    partial.mkdir()
    for name in WORDNET_FILES:
        if name != "index.sense":
            (partial / name).write_text("")
    with pytest.raises(
        MissingResourceError, match="index.sense.*apt-get install wordnet-sense-index"
    ):
        prepare_nltk_data(tmp_path / "nltk", wordnet_dir=partial, lexnames=LEXNAMES)


def test_recipes_name_the_package_of_a_file_missing_from_a_prepared_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A folder prepared before index.sense was required: the recipe's resource lookup names the
    # package instead of NLTK's OSError at the first attack.
    import nltk

    monkeypatch.setattr(nltk.data, "path", [])
    wordnet = tmp_path / "nltk" / "corpora" / "wordnet"
    wordnet.mkdir(parents=True)
    for name in [*WORDNET_FILES, "lexnames"]:
        if name != "index.sense":
            (wordnet / name).write_text("")
    resources = OfflineResources(nltk_data=tmp_path / "nltk", cache_dir=tmp_path / "cache")
    with pytest.raises(MissingResourceError, match="index.sense.*wordnet-sense-index"):
        find_nltk_resource("corpora/wordnet", "WordNet (PWWS)", resources)
    (wordnet / "index.sense").write_text("")
    assert find_nltk_resource("corpora/wordnet", "WordNet (PWWS)", resources) == str(wordnet)
