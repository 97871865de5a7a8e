"""Whether the files an offline recipe reads are in place, checked in the user's process before
any worker starts (no TextAttack needed), so that a missing file is one clear error at
``AttackCallback.attach`` or at the start of ``loyalkit attack run``, not a traceback logged at
every evaluation.

What each recipe reads (the worker's :mod:`loyalkit.robustness.recipes` reads the same places):
every recipe an English stop-word list (TextAttack's import); ``textfooler-offline``,
``pwws-offline``, ``pwws`` and ``leap`` WordNet; ``textfooler-offline`` a synonym source. NLTK
looks in its own data path first, then in ``resources.nltk_data``.

Example:
    >>> import tempfile
    >>> empty = OfflineResources(nltk_data=Path(tempfile.mkdtemp()), cache_dir=Path(tempfile.mkdtemp()))
    >>> [line.split(" (")[0] for line in missing_resources("textfooler-offline", empty, nltk_path=[])]
    ['an English stop-word list', 'WordNet', 'a synonym source']
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from loyalkit.robustness.textattack_setup import MissingResourceError, OfflineResources
from loyalkit.robustness.wordnet_files import LEXNAMES, WORDNET_FILES

_NEEDS_WORDNET = frozenset({"textfooler-offline", "pwws-offline", "pwws", "leap"})
PREPARE_COMMAND = "loyalkit attack prepare-data --online"
OFFLINE_COMMAND = (
    "apt-get install wordnet-base wordnet-sense-index && loyalkit attack prepare-data "
    "--neighbours counterfitted_neighbors.json"
)


def _nltk_path() -> list[str]:
    """NLTK's own data path (``NLTK_DATA``, ``~/nltk_data``, ...), read without changing it."""
    if importlib.util.find_spec("nltk") is None:
        return []
    import nltk

    return [str(p) for p in nltk.data.path]


def _first_with(folders: Sequence[Path], name: str) -> Path | None:
    """The first of ``folders`` holding ``corpora/<name>`` (a folder or NLTK's zip)."""
    for folder in folders:
        corpus = folder / "corpora" / name
        if corpus.exists() or corpus.with_suffix(".zip").is_file():
            return corpus
    return None


def missing_resources(
    recipe: str,
    resources: OfflineResources | None = None,
    *,
    nltk_path: Sequence[str] | None = None,
) -> list[str]:
    """One line per resource ``recipe`` needs that is absent (empty: all present).

    ``nltk_path``: NLTK's data folders searched before ``resources.nltk_data`` (default: NLTK's
    own path, when NLTK is installed).
    """
    resources = (resources or OfflineResources()).resolved()
    assert resources.nltk_data is not None and resources.cache_dir is not None
    folders = [Path(p) for p in (_nltk_path() if nltk_path is None else nltk_path)]
    folders.append(resources.nltk_data)
    missing: list[str] = []
    stopwords = _first_with(folders, "stopwords")
    if stopwords is None or (stopwords.is_dir() and not (stopwords / "english").is_file()):
        missing.append(
            f"an English stop-word list (NLTK's corpora/stopwords/english, e.g. in "
            f"{resources.nltk_data}; TextAttack's import needs it)"
        )
    if recipe in _NEEDS_WORDNET:
        wordnet = _first_with(folders, "wordnet")
        if wordnet is None:
            missing.append(f"WordNet (NLTK's corpora/wordnet, e.g. in {resources.nltk_data})")
        elif wordnet.is_dir():
            lacking = [n for n in (*WORDNET_FILES, LEXNAMES) if not (wordnet / n).is_file()]
            if lacking:
                missing.append(f"WordNet files {', '.join(lacking)} in {wordnet}")
    if recipe == "textfooler-offline":
        missing.extend(_missing_synonyms(resources))
    return missing


def _missing_synonyms(resources: OfflineResources) -> list[str]:
    if resources.synonyms is not None:
        if Path(resources.synonyms).exists():
            return []
        return [f"a synonym source (`synonyms`={str(resources.synonyms)!r} does not exist)"]
    if resources.synonym_source() is not None:
        return []
    return [
        f"a synonym source (the counter-fitted neighbour sets at {resources.neighbours_file()}, "
        "or `synonyms`=PATH)"
    ]


def check_resources(recipe: str, resources: OfflineResources | None, *, who: str) -> None:
    """Raise one :class:`MissingResourceError` naming everything ``recipe`` lacks and the command
    that provides it; ``who`` names the caller in the message (e.g. ``"AttackCallback"``)."""
    missing = missing_resources(recipe, resources)
    if not missing:
        return
    raise MissingResourceError(
        f"{who}: recipe {recipe!r} cannot run, it lacks " + "; ".join(missing) + ". Provide them "
        f"with `{PREPARE_COMMAND}` (WordNet and stop words through NLTK, the counter-fitted "
        f"neighbour sets from github.com/robinjia/certified-word-sub), or offline with "
        f"`{OFFLINE_COMMAND}` (a local copy of that file); pass `resources=OfflineResources(...)` "
        "if you wrote them elsewhere than the default folders. recipe='deepwordbug' needs the "
        "stop words only."
    )
