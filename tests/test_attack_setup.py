"""Offline resources for the attacks: the NLTK folder, TextAttack's import, the errors that guide.

Tests marked ``attack`` need TextAttack (compat environment); the others run in both environments.
TextAttack is imported in fresh subprocesses where a test is about that import itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loyalkit.robustness.textattack_setup import (
    DEBIAN_WORDNET_DIR,
    MissingResourceError,
    OfflineResources,
    prepare_nltk_data,
    prepare_textattack_cache,
)
from loyalkit.robustness.wordnet_files import WORDNET_FILES

LEXNAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "wordnet" / "lexnames"


def run_python(code: str, tmp_path: Path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# Raises on any outgoing connection and on any NLTK download: a test fails on a network attempt.
NETWORK_GUARD = """
import socket
def _refuse(*args, **kwargs):
    raise AssertionError("network access attempted")
socket.socket.connect = _refuse
socket.create_connection = _refuse
import nltk
nltk.download = _refuse
"""


def test_importing_loyalkit_does_not_import_textattack(tmp_path: Path) -> None:
    result = run_python(
        """
        import json, sys
        import loyalkit, loyalkit.robustness
        import loyalkit.robustness.recipes, loyalkit.robustness.textattack_setup
        import loyalkit.robustness.word_substitution, loyalkit.robustness.wordnet_pos
        import loyalkit.robustness.sentence_encoder, loyalkit.cli.attack
        names = dir(loyalkit.robustness)
        print(json.dumps({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                                          ("textattack", "nltk", "flair")),
                          "exports": "build_attack" in names and "attack_model" in names}))
        """,
        tmp_path,
    )
    assert result == {"loaded": [], "exports": True}


def test_build_attack_without_textattack_names_the_setup(tmp_path: Path) -> None:
    # A finder that makes `textattack` missing, as in an environment without the attack extra.
    result = run_python(
        """
        import json, sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "textattack":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, Missing())
        from loyalkit.robustness import build_attack
        try:
            build_attack("deepwordbug", model_wrapper=None)
        except ImportError as err:
            print(json.dumps({"error": str(err)}))
        """,
        tmp_path,
    )
    assert "loyalkit attack setup" in result["error"] and "TextAttack" in result["error"]
    assert "transformers<5" not in result["error"]


def test_prepare_stop_words_matches_scikit_learn(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    folder = prepare_nltk_data(tmp_path / "nltk", wordnet_dir=None)
    lines = (folder / "corpora" / "stopwords" / "english").read_text().split()
    assert set(lines) == set(ENGLISH_STOP_WORDS)
    assert len(lines) == len(ENGLISH_STOP_WORDS) == 318
    assert not (folder / "corpora" / "wordnet").exists()


def test_prepare_copies_wordnet_and_lexnames(tmp_path: Path) -> None:
    folder = prepare_nltk_data(tmp_path / "nltk", lexnames=LEXNAMES)
    wordnet = folder / "corpora" / "wordnet"
    for name in ("data.noun", "index.verb", "adj.exc"):
        assert (wordnet / name).read_bytes() == (DEBIAN_WORDNET_DIR / name).read_bytes()
    assert (wordnet / "lexnames").read_bytes() == LEXNAMES.read_bytes()


def test_prepare_errors_name_the_missing_resource(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MissingResourceError, match="wordnet-base"):
        prepare_nltk_data(tmp_path / "a", wordnet_dir=tmp_path / "no-wordnet-here")
    fake = tmp_path / "wordnet"
    fake.mkdir()
    for name in WORDNET_FILES:  # every file NLTK opens, so that only lexnames is missing
        (fake / name).write_text("")
    # lexnames comes from wordnet-base's man page; a system whose man pages are excluded:
    monkeypatch.setattr(
        "loyalkit.robustness.textattack_setup.DEBIAN_LEXNAMES_MAN_PAGE", str(tmp_path / "no.gz")
    )
    with pytest.raises(MissingResourceError, match="--lexnames"):
        prepare_nltk_data(tmp_path / "b", wordnet_dir=fake)
    with pytest.raises(MissingResourceError, match="lexnames="):
        prepare_nltk_data(tmp_path / "c", wordnet_dir=fake, lexnames=tmp_path / "missing")


def test_textattack_marker(tmp_path: Path) -> None:
    marker = prepare_textattack_cache(tmp_path / "cache")
    assert marker == tmp_path / "cache" / "post_install_check_3"
    assert marker.is_file()


def test_default_resources_are_in_the_user_cache() -> None:
    default = OfflineResources.default()
    assert default.nltk_data == Path.home() / ".cache" / "loyalkit" / "nltk_data"
    assert default.cache_dir == Path.home() / ".cache" / "loyalkit" / "textattack"
    resolved = OfflineResources(synonyms="words.json").resolved()  # type: ignore[arg-type]
    assert resolved.synonyms == Path("words.json")
    assert resolved.nltk_data == default.nltk_data


@pytest.mark.attack
def test_import_textattack_offline_leaves_environment_alone(tmp_path: Path) -> None:
    nltk_data = prepare_nltk_data(tmp_path / "nltk", wordnet_dir=None)
    cache = tmp_path / "ta-cache"
    result = run_python(
        NETWORK_GUARD
        + f"""
import json, logging, os
os.environ["HF_HOME"] = {str(tmp_path / "hf")!r}
before = dict(os.environ)
disabled_before = logging.getLogger("transformers").disabled  # exists before TextAttack's import
from pathlib import Path
from loyalkit.robustness import OfflineResources, import_textattack
textattack = import_textattack(
    OfflineResources(nltk_data=Path({str(nltk_data)!r}), cache_dir=Path({str(cache)!r})))
import huggingface_hub.constants, textattack.shared.utils.install as install
print(json.dumps({{
    "same_environ": dict(os.environ) == before,
    "changed": sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k)),
    "attack": hasattr(textattack, "Attack"),
    "cache": install.TEXTATTACK_CACHE_DIR,
    "hf_home": huggingface_hub.constants.HF_HOME,
    "logger_unchanged": logging.getLogger("transformers").disabled == disabled_before,
}}))
""",
        tmp_path,
    )
    assert result["changed"] == []
    assert result["same_environ"] and result["attack"] and result["logger_unchanged"]
    assert result["cache"] == str(cache)
    assert result["hf_home"] == str(tmp_path / "hf")  # not TextAttack's cache folder
    assert (cache / "post_install_check_3").is_file()


@pytest.mark.attack
def test_import_textattack_without_stop_words_says_how_to_prepare(tmp_path: Path) -> None:
    empty = tmp_path / "empty-nltk"
    empty.mkdir()
    result = run_python(
        NETWORK_GUARD
        + f"""
import json, sys
from pathlib import Path
from loyalkit.robustness import MissingResourceError, OfflineResources, import_textattack
try:
    import_textattack(OfflineResources(nltk_data=Path({str(empty)!r}),
                                       cache_dir=Path({str(tmp_path / "cache")!r})))
except MissingResourceError as err:
    print(json.dumps({{"error": str(err), "imported": "textattack" in sys.modules}}))
""",
        tmp_path,
    )
    assert "stop-word list" in result["error"]
    assert "corpora/stopwords/english" in result["error"]
    assert "loyalkit attack prepare-data" in result["error"]
    assert result["imported"] is False
