"""The offline attack recipes on tiny local BERTs, and on the real MiniLM teacher (``real_model``).

Every success is checked by running the model on the perturbed text; TextFooler-offline's swaps are
checked against TextAttack's own stop-word list (read from its recipe's source) and the synonym file;
PWWS's against NLTK's WordNet; the sentence encoder against sentence-transformers.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sst2 import fine_tune_minilm, sst2_rows
from tiny_bert import tiny_bert, tiny_sentiment_texts, tiny_tokenizer

from loyalkit.robustness import (
    RECIPE_NAMES,
    MissingResourceError,
    OfflineResources,
    build_attack,
    import_textattack,
    prepare_nltk_data,
)

pytestmark = pytest.mark.attack

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NEIGHBOURS = SHARED / "word_substitution" / "counterfitted_neighbors.json"
LEXNAMES = SHARED / "wordnet" / "lexnames"
SST2 = Path(os.environ.get("LOYALKIT_SST2_DIR", SHARED / "sst2"))


@pytest.fixture(scope="module")
def resources(tmp_path_factory: pytest.TempPathFactory) -> OfflineResources:
    folder = tmp_path_factory.mktemp("attack-resources")
    nltk_data = prepare_nltk_data(folder / "nltk", lexnames=LEXNAMES)
    found = OfflineResources(nltk_data=nltk_data, cache_dir=folder / "ta", synonyms=NEIGHBOURS)
    import_textattack(found)
    return found


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, resources: OfflineResources) -> Any:
    """A tiny BERT trained on tiny sentiment sentences (100% on held-out ones), and its wrapper."""
    from textattack.models.wrappers import HuggingFaceModelWrapper

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))
    model = tiny_bert(seed=1)
    texts, labels = tiny_sentiment_texts(512, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(3):
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start : start + 32], padding=True, return_tensors="pt")
            loss = model(**batch, labels=torch.tensor(labels[start : start + 32])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    return model, tokenizer, HuggingFaceModelWrapper(model, tokenizer)


def predict(model: Any, tokenizer: Any, texts: list[str]) -> list[int]:
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return model(**batch).logits.argmax(-1).tolist()


def run_attack(attack: Any, texts: list[str], labels: list[int]) -> list[Any]:
    import textattack

    dataset = textattack.datasets.Dataset(list(zip(texts, labels, strict=True)))
    args = textattack.AttackArgs(
        num_examples=len(texts), disable_stdout=True, silent=True, random_seed=0
    )
    return textattack.Attacker(attack, dataset, args).attack_dataset()


def successes(results: list[Any]) -> list[Any]:
    from textattack.attack_results import SuccessfulAttackResult

    return [r for r in results if isinstance(r, SuccessfulAttackResult)]


def swaps(result: Any) -> list[tuple[str, str]]:
    before = result.original_result.attacked_text.words
    after = result.perturbed_result.attacked_text.words
    assert len(before) == len(after)  # word swaps only
    return [(a, b) for a, b in zip(before, after, strict=True) if a != b]


def textfooler_stopwords_from_textattack() -> set[str]:
    """The stop words written in TextAttack's own TextFooler recipe, read from its source."""
    import textattack.attack_recipes.textfooler_jin_2019 as recipe

    tree = ast.parse(Path(recipe.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "set" and node.args:
            return set(ast.literal_eval(node.args[0]))
    raise AssertionError("no stop-word set in TextAttack's TextFooler recipe")


ATTACK_TEXTS = [
    "the movie was really good and the acting was wonderful",
    "the story is very funny and the music is beautiful",
    "ending acting film great very",
    "the film was dull and the plot was a mess",
    "it is a terrible and boring movie",
    "really brilliant acting",
    "the music is fine",
    "story movie very charming film",
]


@pytest.fixture(scope="module")
def tiny_results(tiny_classifier: Any, resources: OfflineResources) -> dict[str, list[Any]]:
    model, tokenizer, wrapper = tiny_classifier
    labels = predict(model, tokenizer, ATTACK_TEXTS)
    return {
        recipe: run_attack(build_attack(recipe, wrapper, resources), ATTACK_TEXTS, labels)
        for recipe in RECIPE_NAMES
    }


@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_every_success_flips_the_models_label(
    recipe: str, tiny_results: dict[str, list[Any]], tiny_classifier: Any
) -> None:
    model, tokenizer, _ = tiny_classifier
    results = tiny_results[recipe]
    assert len(results) == len(ATTACK_TEXTS)
    won = successes(results)
    assert len(won) >= 2, [type(r).__name__ for r in results]
    originals = predict(model, tokenizer, [r.original_result.attacked_text.text for r in won])
    perturbed = predict(model, tokenizer, [r.perturbed_result.attacked_text.text for r in won])
    assert all(a != b for a, b in zip(originals, perturbed, strict=True))
    assert all(
        r.original_result.ground_truth_output == a for r, a in zip(won, originals, strict=True)
    )


def test_textfooler_offline_swaps_listed_synonyms_and_never_stop_words(
    tiny_results: dict[str, list[Any]],
) -> None:
    neighbours = json.loads(NEIGHBOURS.read_text())
    stopwords = textfooler_stopwords_from_textattack()
    changed = [pair for r in successes(tiny_results["textfooler-offline"]) for pair in swaps(r)]
    assert changed
    for before, after in changed:
        assert before.lower() not in stopwords
        assert after.lower() in neighbours[before.lower()], (before, after)


def test_textfooler_stop_words_are_textattacks() -> None:
    from loyalkit.robustness.recipes import TEXTFOOLER_STOPWORDS

    assert textfooler_stopwords_from_textattack() == set(TEXTFOOLER_STOPWORDS)


def test_pwws_offline_swaps_wordnet_synonyms(tiny_results: dict[str, list[Any]]) -> None:
    from nltk.corpus import wordnet
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    changed = [pair for r in successes(tiny_results["pwws-offline"]) for pair in swaps(r)]
    assert changed
    for before, after in changed:
        assert before not in ENGLISH_STOP_WORDS
        lemmas = {name for s in wordnet.synsets(before) for name in s.lemma_names()}
        assert after in lemmas, (before, after)


def test_deepwordbug_makes_one_character_edits(tiny_results: dict[str, list[Any]]) -> None:
    import nltk

    changed = [pair for r in successes(tiny_results["deepwordbug"]) for pair in swaps(r)]
    assert changed
    for before, after in changed:
        assert nltk.edit_distance(before, after, transpositions=True) == 1, (before, after)


def test_wordnet_pos_tags_and_compatibility_by_hand(resources: OfflineResources) -> None:
    from nltk.corpus import wordnet

    from loyalkit.robustness.wordnet_pos import pos_compatible, wordnet_pos_tags

    assert wordnet_pos_tags("movies", wordnet) == {"NOUN"}
    assert wordnet_pos_tags("quickly", wordnet) == {"ADV"}
    assert wordnet_pos_tags("beautiful", wordnet) == {"ADJ"}
    assert wordnet_pos_tags("running", wordnet) >= {"NOUN", "VERB", "ADJ"}
    assert wordnet_pos_tags("the", wordnet) == frozenset()
    assert pos_compatible(frozenset({"NOUN"}), frozenset({"NOUN", "VERB"}))
    assert pos_compatible(frozenset({"VERB"}), frozenset({"NOUN"}))
    assert not pos_compatible(frozenset({"VERB"}), frozenset({"NOUN"}), allow_verb_noun_swap=False)
    assert not pos_compatible(frozenset({"ADJ"}), frozenset({"ADV"}))
    assert pos_compatible(frozenset(), frozenset({"ADV"}))  # unknown original: no judgement
    assert not pos_compatible(frozenset({"ADJ"}), frozenset())  # unknown substitute: rejected


def test_wordnet_pos_constraint_on_swaps(resources: OfflineResources) -> None:
    from textattack.shared import AttackedText

    from loyalkit.robustness.wordnet_pos import wordnet_pos_constraint

    constraint = wordnet_pos_constraint(resources=resources)
    text = AttackedText("a beautiful movie")
    cases = {
        (1, "lovely"): True,  # adjective for adjective
        (1, "quickly"): False,  # adverb for adjective
        (2, "film"): True,  # noun for noun
        (2, "beautifully"): False,  # adverb for noun
        (2, "buena"): False,  # unknown to WordNet
        (0, "quickly"): False,  # WordNet knows "a" only as a noun (vitamin A, the letter)
    }
    for (index, word), allowed in cases.items():
        swapped = text.replace_word_at_index(index, word)
        assert bool(constraint._check_constraint(swapped, text)) is allowed, (index, word)


def test_sentence_encoder_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    from loyalkit.robustness.sentence_encoder import MeanPooledEncoder, default_encoder_path

    torch.set_num_threads(1)
    sentences = ["a good film", "a fine movie", "the tax office opens at nine", "good"]
    ours = MeanPooledEncoder(batch_size=3).encode(sentences)
    reference = SentenceTransformer(str(default_encoder_path()), device="cpu").encode(
        sentences, convert_to_tensor=True, normalize_embeddings=True
    )
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["use", "minilm"])
def test_sentence_encoder_constraint_uses_the_angular_similarity(
    resources: OfflineResources, name: str
) -> None:
    from textattack.shared import AttackedText

    from loyalkit.robustness.sentence_encoder import (
        load_sentence_encoder,
        sentence_encoder_constraint,
    )

    torch.set_num_threads(1)
    encoder = load_sentence_encoder(name)
    constraint = sentence_encoder_constraint(
        encoder, threshold=0.8, window_size=None, skip_text_shorter_than_window=False
    )
    original = AttackedText("the acting is wonderful and the story is moving")
    swapped = [
        original.replace_word_at_index(3, word) for word in ("marvelous", "awful", "tuesday")
    ]
    kept = constraint._check_constraint_many(swapped, original)
    vectors = encoder.encode([original.text] + [t.text for t in swapped]).numpy()
    cosines = vectors[1:] @ vectors[0] / np.linalg.norm(vectors[1:], axis=1)
    angular = [1 - math.acos(min(1.0, c)) / math.pi for c in cosines]
    for text, expected in zip(swapped, angular, strict=True):
        assert text.attack_attrs["similarity_score"] == pytest.approx(expected, abs=1e-5)
    assert [t.text for t in kept] == [
        t.text for t, a in zip(swapped, angular, strict=True) if a >= 0.8
    ]
    # TextAttack's Attack.clear_cache() reaches the encoder's cache through the constraint.
    assert encoder._cache
    constraint.clear_cache()
    assert not encoder._cache


def test_vector_file_source_ranks_neighbours_by_cosine(
    tmp_path: Path, resources: OfflineResources
) -> None:
    from loyalkit.robustness.word_substitution import synonym_swap

    rng = np.random.default_rng(0)
    words = ["good", "fine", "nice", "bad", "car", "tree"]
    vectors = rng.normal(size=(len(words), 8)) * rng.uniform(0.5, 3, size=(len(words), 1))
    path = tmp_path / "vectors.txt"
    path.write_text(
        f"{len(words)} 8\n"
        + "".join(
            w + " " + " ".join(f"{x:.6f}" for x in v) + "\n"
            for w, v in zip(words, vectors, strict=True)
        )
    )
    transformation, embedding = synonym_swap(path, max_candidates=3)
    assert embedding is not None
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = [words[i] for i in np.argsort(-(unit @ unit[0]))[1:4]]
    assert transformation._get_replacement_words("good") == expected


def test_textfooler_offline_with_vectors_filters_by_cosine(
    tmp_path: Path, resources: OfflineResources, tiny_classifier: Any
) -> None:
    from dataclasses import replace

    from textattack.constraints.semantics import WordEmbeddingDistance

    path = tmp_path / "glove.txt"
    path.write_text("good 1 0\nfine 0.8 0.6\nbad -1 0\n, 0 1\n")
    attack = build_attack(
        "textfooler-offline", tiny_classifier[2], replace(resources, synonyms=path)
    )
    distance = [c for c in attack.constraints if isinstance(c, WordEmbeddingDistance)]
    assert len(distance) == 1 and distance[0].min_cos_sim == 0.5
    assert attack.transformation._get_replacement_words("good") == ["fine", "bad"]  # "," dropped
    assert distance[0].embedding.get_cos_sim("good", "fine") == pytest.approx(0.8)


def test_textattacks_own_embeddings_folder_is_used_when_present(
    tmp_path: Path, resources: OfflineResources, tiny_classifier: Any
) -> None:
    import pickle
    from dataclasses import replace

    folder = tmp_path / "ta" / "word_embeddings" / "paragramcf"
    folder.mkdir(parents=True)
    np.save(folder / "paragram.npy", np.eye(4, dtype=np.float32))
    with open(folder / "wordlist.pickle", "wb") as f:
        pickle.dump({"good": 0, "fine": 1, "nice": 2, "car": 3}, f)
    np.save(folder / "nn.npy", np.array([[0, 2, 1, 3], [1, 0, 2, 3], [2, 0, 1, 3], [3, 0, 1, 2]]))
    official = replace(resources, synonyms=None, cache_dir=tmp_path / "ta")
    attack = build_attack("textfooler-offline", tiny_classifier[2], official)
    # TextAttack's neighbour matrix order (row 0: good -> nice, fine), not recomputed
    assert attack.transformation._get_replacement_words("good") == ["nice", "fine", "car"]


def test_build_attack_checks_its_arguments(
    resources: OfflineResources, tiny_classifier: Any
) -> None:
    wrapper = tiny_classifier[2]
    with pytest.raises(ValueError, match="recipe must be one of"):
        build_attack("no-such-attack", wrapper, resources)
    with pytest.raises(ValueError, match="query_budget"):
        build_attack("deepwordbug", wrapper, resources, query_budget=0)
    with pytest.raises(ValueError, match="unknown option"):
        build_attack("pwws-offline", wrapper, resources, colour="red")
    attack = build_attack("deepwordbug", wrapper, resources, query_budget=7)
    assert attack.goal_function.query_budget == 7
    # one of TextAttack's own recipes that needs nothing beyond stop words
    pruthi = build_attack("pruthi", wrapper, resources, query_budget=9, max_num_word_swaps=2)
    assert pruthi.goal_function.query_budget == 9
    assert [c.max_num_words for c in pruthi.constraints if hasattr(c, "max_num_words")] == [2]


def test_missing_synonyms_error_names_the_file_and_the_fix(
    tmp_path: Path, resources: OfflineResources, tiny_classifier: Any
) -> None:
    from dataclasses import replace

    missing = replace(resources, synonyms=tmp_path / "nowhere.json")
    with pytest.raises(MissingResourceError, match="nowhere.json") as raised:
        build_attack("textfooler-offline", tiny_classifier[2], missing)
    assert "counterfitted_neighbors.json" in str(raised.value)
    assert "OfflineResources(synonyms=" in str(raised.value)
    no_source = replace(resources, synonyms=None, cache_dir=tmp_path / "empty-cache")
    with pytest.raises(MissingResourceError, match="synonym source"):
        build_attack("textfooler-offline", tiny_classifier[2], no_source)


def test_textattacks_own_textfooler_says_what_is_missing(
    tmp_path: Path, resources: OfflineResources, tiny_classifier: Any
) -> None:
    from dataclasses import replace

    with pytest.raises(MissingResourceError, match="textfooler-offline"):
        build_attack("textfooler", tiny_classifier[2], replace(resources, cache_dir=tmp_path))


def test_bad_characters_homoglyph_file(resources: OfflineResources, tiny_classifier: Any) -> None:
    import textattack

    expected = Path(textattack.__file__).parent / "shared" / "intentional_homoglyphs.txt"
    if expected.is_file():  # a TextAttack that ships the file builds the recipe
        attack = build_attack(
            "bad-characters",
            tiny_classifier[2],
            resources,
            goal_function_type="targeted_classification",
        )
        assert attack is not None
        return
    with pytest.raises(MissingResourceError, match="intentional_homoglyphs.txt") as raised:
        build_attack(
            "bad-characters",
            tiny_classifier[2],
            resources,
            goal_function_type="targeted_classification",
        )
    assert "perturbation_type=" in str(raised.value)
    deletions = build_attack(
        "bad-characters",
        tiny_classifier[2],
        resources,
        goal_function_type="targeted_classification",
        perturbation_type="deletions",
    )
    assert type(deletions.transformation).__name__ == "WordSwapDeletions"


def test_textbugger_homoglyph_swap_without_the_file(resources: OfflineResources) -> None:
    from loyalkit.robustness.recipes import _homoglyph_swap

    swap = _homoglyph_swap()
    # TextBugger's table (textattack word_swap_homoglyph_swap.py): a->U+0251, t->U+1D69D
    assert sorted(swap._get_replacement_words("at")) == sorted(["\u0251t", "a\U0001d69d"])


def test_recipes_make_no_network_attempt(
    monkeypatch: pytest.MonkeyPatch, resources: OfflineResources, tiny_classifier: Any
) -> None:
    import socket

    import nltk

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(nltk, "download", refuse)
    model, tokenizer, wrapper = tiny_classifier
    texts = ATTACK_TEXTS[:3]
    for recipe in RECIPE_NAMES:
        results = run_attack(build_attack(recipe, wrapper, resources), texts, [1, 1, 1])
        assert len(results) == 3


def test_missing_wordnet_error_names_it(tmp_path: Path) -> None:
    # A fresh interpreter: NLTK's search path is process-wide and other tests extend it.
    stopwords_only = prepare_nltk_data(tmp_path / "nltk", wordnet_dir=None)
    code = f"""
        import json
        from pathlib import Path
        from loyalkit.robustness import MissingResourceError, OfflineResources, build_attack
        resources = OfflineResources(nltk_data=Path({str(stopwords_only)!r}),
                                     cache_dir=Path({str(tmp_path / "cache")!r}))
        try:
            build_attack("pwws-offline", None, resources)
        except MissingResourceError as err:
            print(json.dumps({{"error": str(err)}}))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    error = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert "WordNet" in error and "corpora/wordnet" in error
    assert "loyalkit attack prepare-data" in error


# ---------------------------------------------------------------- the real MiniLM teacher on SST-2


@pytest.fixture(scope="session")
def minilm_teacher() -> Any:
    """all-MiniLM-L6-v2 fine-tuned for one epoch on 1,024 SST-2 training sentences (32 batches)."""
    rows = sst2_rows(SST2 / "train.tsv")
    random.Random(0).shuffle(rows)
    rows = rows[:1024]
    model, tokenizer = fine_tune_minilm(
        [r["sentence"] for r in rows], [r["label"] for r in rows], batch_size=32
    )
    tokenizer.model_max_length = 64  # TextAttack's wrapper pads every query to this length
    return model, tokenizer


@pytest.mark.real_model
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_recipes_fool_the_real_teacher(
    recipe: str, minilm_teacher: Any, resources: OfflineResources
) -> None:
    from textattack.attack_results import SkippedAttackResult
    from textattack.models.wrappers import HuggingFaceModelWrapper

    model, tokenizer = minilm_teacher
    rows = sst2_rows(SST2 / "dev.tsv")
    random.Random(1).shuffle(rows)
    texts = [r["sentence"] for r in rows[:20]]
    labels = [int(r["label"]) for r in rows[:20]]
    wrapper = HuggingFaceModelWrapper(model, tokenizer)
    results = run_attack(build_attack(recipe, wrapper, resources), texts, labels)
    attacked = [r for r in results if not isinstance(r, SkippedAttackResult)]
    won = successes(results)
    print(f"\n{recipe}: {len(attacked)} correctly classified, {len(won)} fooled")
    assert len(attacked) >= 12  # the teacher is right on most dev sentences (about 80%)
    assert len(won) >= 0.3 * len(attacked)
    perturbed = predict(model, tokenizer, [r.perturbed_result.attacked_text.text for r in won])
    assert all(
        p != r.original_result.ground_truth_output for p, r in zip(perturbed, won, strict=True)
    )
