"""The counter-fitted neighbour sets TextFooler-offline draws its candidates from: where they come
from, and putting a checked copy where the recipe looks for them.

The file is ``data/counterfitted_neighbors.json`` of ``robinjia/certified-word-sub`` (MIT; the
synonym sets of Alzantot et al. 2018 over the counter-fitted vectors of Mrksic et al. 2016):
49,975 words, up to 8 neighbours each. :func:`install_neighbours` downloads it (``url``) or copies
a local file (``source``), checks its sha256 against :data:`NEIGHBOURS_SHA256` so that a truncated
or altered file fails here with a clear error (never as odd candidates later), and writes it
atomically. ``loyalkit attack prepare-data`` calls it (``--online`` / ``--neighbours FILE``).

Example:
    >>> NEIGHBOURS_URL.endswith("/data/counterfitted_neighbors.json")
    True
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

#: The upstream file at the commit the checksum was taken from.
NEIGHBOURS_URL = (
    "https://raw.githubusercontent.com/robinjia/certified-word-sub/"
    "42006fe9ea68663443be794a96d9daccfc664dc4/data/counterfitted_neighbors.json"
)
NEIGHBOURS_SHA256 = "103247143f39bd5dd66850f3a912393392641dbd98093c61e2b24a4cc8a96fb0"
NEIGHBOURS_SOURCE = "github.com/robinjia/certified-word-sub, data/counterfitted_neighbors.json"


class ChecksumError(ValueError):
    """A neighbour-set file whose sha256 is not the upstream file's."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_neighbours(
    target: Path,
    *,
    source: Path | None = None,
    url: str | None = None,
    sha256: str = NEIGHBOURS_SHA256,
    timeout_s: float = 60.0,
) -> Path:
    """Put the checked neighbour sets at ``target`` from ``source`` (a local file) or ``url``.

    Exactly one of ``source`` and ``url`` is given. ``target`` is replaced only by a file whose
    sha256 is ``sha256``; returns ``target``.

    Raises:
        ValueError: neither or both of ``source`` and ``url``.
        FileNotFoundError: ``source`` is missing.
        OSError: the download failed (the message names the URL).
        ChecksumError: the file is not the upstream one.
    """
    if (source is None) == (url is None):
        raise ValueError("give exactly one of `source` (a local file) and `url`")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=".neighbours-", suffix=".part")
    partial = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            if source is not None:
                if not Path(source).is_file():
                    raise FileNotFoundError(f"--neighbours {str(source)!r} is not a file")
                with open(source, "rb") as f:
                    shutil.copyfileobj(f, out)
            else:
                assert url is not None
                try:
                    with urllib.request.urlopen(url, timeout=timeout_s) as response:
                        shutil.copyfileobj(response, out)
                except OSError as err:
                    raise OSError(
                        f"downloading the neighbour sets from {url} failed ({err}); offline, "
                        "give a local copy with --neighbours FILE"
                    ) from err
        found = sha256_of(partial)
        if found != sha256:
            origin = str(source) if source is not None else url
            raise ChecksumError(
                f"the neighbour sets from {origin} have sha256 {found}, expected {sha256} "
                f"({NEIGHBOURS_SOURCE} at commit 42006fe): a truncated or altered file; "
                f"nothing was written to {target}"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target
