"""The WordNet 3.0 files NLTK's reader opens, and the Debian package that ships each one.

NLTK's ``WordNetCorpusReader`` opens every file of its ``_FILES`` list when it is built, so one
missing file (``index.sense`` is in ``wordnet-sense-index``, not in ``wordnet-base``) fails every
WordNet recipe. This table is the one place that says which package to install; it imports
nothing, so the Makefile's system check (``tests/system_deps.py``) reads it with a bare Python.

Example:
    >>> WORDNET_FILES["index.sense"]
    'wordnet-sense-index'
    >>> sorted(set(WORDNET_FILES.values()))
    ['wordnet-base', 'wordnet-sense-index']
"""

from __future__ import annotations

_BASE = "wordnet-base"
_SENSE_INDEX = "wordnet-sense-index"

#: File name in ``/usr/share/wordnet`` -> the Debian package that installs it. ``lexnames`` is not
#: here: no Debian package ships it (``loyalkit attack prepare-data --lexnames FILE`` adds it).
WORDNET_FILES: dict[str, str] = {
    **{f"data.{pos}": _BASE for pos in ("adj", "adv", "noun", "verb")},
    **{f"index.{pos}": _BASE for pos in ("adj", "adv", "noun", "verb")},
    **{f"{pos}.exc": _BASE for pos in ("adj", "adv", "noun", "verb")},
    "cntlist.rev": _BASE,
    "index.sense": _SENSE_INDEX,
}

#: The file NLTK also needs that the user provides (``--lexnames``).
LEXNAMES = "lexnames"
