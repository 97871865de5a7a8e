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

#: Debian's ``wordnet-base`` documents the lexnames table in this man page (``man 5WN lexnames``)
#: instead of shipping the file: :func:`lexnames_from_man_page` writes the file from it.
DEBIAN_LEXNAMES_MAN_PAGE = "/usr/share/man/man5/lexnames.5WN.gz"

# The syntactic category NLTK reads from lexnames' third field, by the file name's prefix.
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_from_man_page(man_page: str = DEBIAN_LEXNAMES_MAN_PAGE) -> str:
    """The ``lexnames`` file's text (``NN<TAB>name<TAB>category`` per line) from the table in the
    ``lexnames(5WN)`` man page (gzipped troff).

    Raises:
        ValueError: the page does not hold the 45 numbered rows 00-44.
    """
    import gzip
    import re

    with gzip.open(man_page, "rt", encoding="utf-8", errors="replace") as f:
        page = f.read()
    rows = re.findall(r"^(\d\d)\t([a-z]+)\.(\w+)\s*\t", page, flags=re.MULTILINE)
    numbers = [int(number) for number, _, _ in rows]
    if numbers != list(range(45)) or any(kind not in _CATEGORY for _, kind, _ in rows):
        raise ValueError(
            f"{man_page} does not hold WordNet 3.0's table of 45 lexicographer files "
            f"(found rows {numbers})"
        )
    return "".join(f"{n}\t{kind}.{name}\t{_CATEGORY[kind]}\n" for n, kind, name in rows)
