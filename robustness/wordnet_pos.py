"""A part-of-speech constraint on word swaps that needs only WordNet, not a POS tagger.

TextFooler keeps a substitute only if an NLTK tagger gives it the same universal POS tag as the
word it replaces, in its context (nouns and verbs may swap). NLTK's tagger data has no offline
source, so TextFooler-offline asks WordNet instead which parts of speech each word *can* take
(``wordnet.synsets`` lemmatises inflected forms) and keeps a substitute when the two sets share
one. This is context-free, hence looser than the tagger: "fine" (adjective, noun, verb, adverb in
WordNet) may replace a word of any of those classes. Rules:

- both words known to WordNet: the POS sets must intersect (``NOUN``/``VERB`` count as
  compatible when ``allow_verb_noun_swap``, as in TextFooler);
- the original word unknown to WordNet (function words, names): no judgement, the swap is kept;
- the substitute unknown but the original known: the swap is rejected (a word WordNet does not
  know, e.g. a foreign-language neighbour, is not a same-POS synonym).

Example:
    >>> pos_compatible(frozenset({"ADJ"}), frozenset({"NOUN"}))
    False
    >>> pos_compatible(frozenset({"VERB"}), frozenset({"NOUN"}))
    True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from loyalkit.robustness.textattack_setup import OfflineResources, find_nltk_resource

# WordNet's synset POS letters -> universal tags ('s' is a satellite adjective)
WORDNET_TO_UNIVERSAL = {"n": "NOUN", "v": "VERB", "a": "ADJ", "s": "ADJ", "r": "ADV"}


def wordnet_pos_tags(word: str, wordnet: Any) -> frozenset[str]:
    """The universal POS tags WordNet allows for ``word`` (empty when WordNet does not know it)."""
    return frozenset(WORDNET_TO_UNIVERSAL[s.pos()] for s in wordnet.synsets(word.lower()))


def pos_compatible(
    original: frozenset[str], substitute: frozenset[str], allow_verb_noun_swap: bool = True
) -> bool:
    """Whether a word with POS set ``substitute`` may replace one with POS set ``original``."""
    if not original:
        return True
    if not substitute:
        return False
    if original & substitute:
        return True
    return (
        allow_verb_noun_swap
        and bool(original & {"NOUN", "VERB"})
        and bool(substitute & {"NOUN", "VERB"})
    )


def wordnet_pos_constraint(
    allow_verb_noun_swap: bool = True,
    compare_against_original: bool = True,
    resources: OfflineResources | None = None,
) -> Any:
    """A TextAttack ``Constraint`` applying :func:`pos_compatible` to every swapped word.

    Raises:
        MissingResourceError: WordNet is not in the NLTK data path.
    """
    resources = resources or OfflineResources()
    find_nltk_resource("corpora/wordnet", "WordNet (for the POS check)", resources)
    from nltk.corpus import wordnet

    return _constraint_class()(wordnet, allow_verb_noun_swap, compare_against_original)


@lru_cache(maxsize=1)
def _constraint_class() -> type:
    # Defined on first use: the base class comes from TextAttack, which is imported only then.
    from textattack.constraints import Constraint
    from textattack.shared.validators import transformation_consists_of_word_swaps

    class WordNetPartOfSpeech(Constraint):
        """Keeps a word swap when WordNet allows a common part of speech for both words."""

        def __init__(
            self, wordnet: Any, allow_verb_noun_swap: bool, compare_against_original: bool
        ) -> None:
            super().__init__(compare_against_original)
            self.wordnet = wordnet
            self.allow_verb_noun_swap = allow_verb_noun_swap
            self._tags: dict[str, frozenset[str]] = {}

        def tags(self, word: str) -> frozenset[str]:
            if word not in self._tags:
                self._tags[word] = wordnet_pos_tags(word, self.wordnet)
            return self._tags[word]

        def _check_constraint(self, transformed_text: Any, reference_text: Any) -> bool:
            try:
                indices = transformed_text.attack_attrs["newly_modified_indices"]
            except KeyError:
                raise KeyError(
                    "the WordNet POS constraint needs `newly_modified_indices`"
                ) from None
            return all(
                pos_compatible(
                    self.tags(reference_text.words[i]),
                    self.tags(transformed_text.words[i]),
                    self.allow_verb_noun_swap,
                )
                for i in indices
            )

        def check_compatibility(self, transformation: Any) -> bool:
            return bool(transformation_consists_of_word_swaps(transformation))

        def extra_repr_keys(self) -> list[str]:
            return ["allow_verb_noun_swap", *super().extra_repr_keys()]

    return WordNetPartOfSpeech
