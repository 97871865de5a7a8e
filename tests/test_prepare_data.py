"""``loyalkit attack prepare-data``: what a fresh machine has (Debian's WordNet, PyPI) and the
upstream neighbour sets become every file the offline recipes read; ``--online`` against a local
HTTP server standing in for NLTK's data index and GitHub; corrupted downloads fail clearly.

Runs in the main environment (no TextAttack). The reference values are independent of the code:
the sha256 sums recorded in ``../shared/data/SOURCE.md`` and the files of ``../shared/data``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from system_deps import WORDNET_DIR

from loyalkit.cli import main
from loyalkit.robustness.neighbour_sets import NEIGHBOURS_SHA256, ChecksumError, install_neighbours
from loyalkit.robustness.resource_check import missing_resources
from loyalkit.robustness.textattack_setup import OfflineResources
from loyalkit.robustness.wordnet_files import (
    DEBIAN_LEXNAMES_MAN_PAGE,
    WORDNET_FILES,
    lexnames_from_man_page,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
NEIGHBOURS = SHARED / "word_substitution" / "counterfitted_neighbors.json"
LEXNAMES = SHARED / "wordnet" / "lexnames"
RECIPES = ("deepwordbug", "pwws-offline", "textfooler-offline")


def source_sha256(name: str) -> str:
    """The sha256 ``../shared/data/SOURCE.md`` records for ``name``."""
    for line in (SHARED / "SOURCE.md").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == name:
            return parts[0]
    raise AssertionError(f"SOURCE.md lists no sha256 for {name}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_recorded_checksum_is_the_upstream_files() -> None:
    assert source_sha256("word_substitution/counterfitted_neighbors.json") == NEIGHBOURS_SHA256
    assert sha256(NEIGHBOURS) == NEIGHBOURS_SHA256


def test_lexnames_from_debians_man_page_is_wordnets_table() -> None:
    assert sha256(LEXNAMES) == source_sha256("wordnet/lexnames")
    assert lexnames_from_man_page(DEBIAN_LEXNAMES_MAN_PAGE) == LEXNAMES.read_text(encoding="utf-8")


def test_offline_from_a_fresh_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resources = OfflineResources(nltk_data=tmp_path / "nltk", cache_dir=tmp_path / "cache")
    assert all(missing_resources(r, resources, nltk_path=[]) for r in RECIPES)
    folders = ["--target", str(tmp_path / "nltk"), "--cache-dir", str(tmp_path / "cache")]
    # No --lexnames: the table comes from wordnet-base's man page.
    assert main(["attack", "prepare-data", *folders]) == 0
    wordnet = tmp_path / "nltk" / "corpora" / "wordnet"
    assert (wordnet / "lexnames").read_bytes() == LEXNAMES.read_bytes()
    for name in WORDNET_FILES:
        assert (wordnet / name).read_bytes() == (WORDNET_DIR / name).read_bytes()
    assert missing_resources("deepwordbug", resources, nltk_path=[]) == []
    assert missing_resources("pwws-offline", resources, nltk_path=[]) == []
    # Without the neighbour sets TextFooler-offline is not ready, and the output says so.
    (lacking,) = missing_resources("textfooler-offline", resources, nltk_path=[])
    assert str(resources.neighbours_file()) in lacking
    assert "textfooler-offline: lacks" in capsys.readouterr().out

    assert main(["attack", "prepare-data", *folders, "--neighbours", str(NEIGHBOURS)]) == 0
    assert sha256(resources.neighbours_file()) == source_sha256(
        "word_substitution/counterfitted_neighbors.json"
    )
    assert missing_resources("textfooler-offline", resources, nltk_path=[]) == []
    assert "textfooler-offline: ready" in capsys.readouterr().out


def test_a_corrupted_local_copy_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "counterfitted_neighbors.json"
    broken.write_bytes(NEIGHBOURS.read_bytes()[:-100])
    resources = OfflineResources(nltk_data=tmp_path / "nltk", cache_dir=tmp_path / "cache")
    args = ["attack", "prepare-data", "--no-wordnet", "--neighbours", str(broken)]
    folders = ["--target", str(tmp_path / "nltk"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, *folders]) == 1
    error = capsys.readouterr().err
    assert f"sha256 {sha256(broken)}, expected {NEIGHBOURS_SHA256}" in error
    with pytest.raises(ChecksumError, match=f"expected {NEIGHBOURS_SHA256}"):
        install_neighbours(resources.neighbours_file(), source=broken)
    assert not resources.neighbours_file().exists()
    assert list(resources.neighbours_file().parent.iterdir()) == []  # no partial file left


# --- online: NLTK's index and GitHub replaced by a local server ------------------------------


def _zip_folder(archive: Path, folder: Path, name: str) -> None:
    """``archive`` holding ``folder``'s files under ``name/`` (NLTK's package layout)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{name}/{path.name}")


def _package(served: Path, base: str, name: str, files: Path) -> str:
    archive = served / f"{name}.zip"
    _zip_folder(archive, files, name)
    size = sum(p.stat().st_size for p in files.iterdir())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    return (
        f'<package id="{name}" name="{name}" url="{base}/{name}.zip" subdir="corpora" '
        f'size="{archive.stat().st_size}" unzipped_size="{size}" checksum="{md5}" '
        f'sha256_checksum="{sha256(archive)}" unzip="1"/>'
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def _nltk_mirror(mirror: Path, tmp_path: Path) -> str:
    """NLTK's ``stopwords`` and ``wordnet`` packages (made from this machine's files) and an index
    listing them, laid out as NLTK's data server does, in ``mirror``; returns the index's URL.

    A ``file://`` mirror: NLTK's downloader refuses loopback HTTP addresses (its SSRF guard) and
    reads ``file://`` URLs inside its data path (``NLTK_DATA``)."""
    base = mirror.as_uri()
    stopwords = tmp_path / "src-stopwords"
    stopwords.mkdir()
    (stopwords / "english").write_text("a\nthe\nof\n", encoding="utf-8")
    wordnet = tmp_path / "src-wordnet"
    wordnet.mkdir()
    for name in [*WORDNET_FILES, "lexnames"]:
        source = LEXNAMES if name == "lexnames" else WORDNET_DIR / name
        (wordnet / name).write_bytes(source.read_bytes())
    packages = [
        _package(mirror, base, n, f) for n, f in (("stopwords", stopwords), ("wordnet", wordnet))
    ]
    (mirror / "index.xml").write_text(
        '<?xml version="1.0"?>\n<nltk_data><packages>'
        + "".join(packages)
        + "</packages><collections></collections></nltk_data>\n",
        encoding="utf-8",
    )
    return f"{base}/index.xml"


def test_online_fetches_everything_textfooler_and_pwws_need(
    tmp_path: Path,
    server: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served, base = server  # GitHub's stand-in
    mirror = tmp_path / "nltk-mirror"  # NLTK's data server's stand-in
    mirror.mkdir()
    monkeypatch.setenv("NLTK_DATA", str(mirror))
    index = _nltk_mirror(mirror, tmp_path)
    (served / "neighbours.json").write_bytes(NEIGHBOURS.read_bytes())
    resources = OfflineResources(nltk_data=tmp_path / "nltk", cache_dir=tmp_path / "cache")
    folders = ["--target", str(tmp_path / "nltk"), "--cache-dir", str(tmp_path / "cache")]
    online = ["attack", "prepare-data", "--online", "--nltk-index-url", index]
    assert main([*online, *folders, "--neighbours-url", f"{base}/neighbours.json"]) == 0
    corpora = tmp_path / "nltk" / "corpora"
    assert (corpora / "stopwords" / "english").read_text(encoding="utf-8").split() == [
        "a",
        "the",
        "of",
    ]
    assert (corpora / "wordnet" / "lexnames").read_bytes() == LEXNAMES.read_bytes()
    assert sha256(resources.neighbours_file()) == source_sha256(
        "word_substitution/counterfitted_neighbors.json"
    )
    for recipe in RECIPES:
        assert missing_resources(recipe, resources, nltk_path=[]) == [], recipe

    # A download cut short: a clear error naming the URL and the checksum; the good copy stays.
    capsys.readouterr()
    (served / "cut.json").write_bytes(NEIGHBOURS.read_bytes()[: 1 << 20])
    assert main([*online, *folders, "--neighbours-url", f"{base}/cut.json"]) == 1
    error = capsys.readouterr().err
    assert f"{base}/cut.json have sha256" in error and f"expected {NEIGHBOURS_SHA256}" in error
    assert sha256(resources.neighbours_file()) == NEIGHBOURS_SHA256
    assert main([*online, *folders, "--neighbours-url", f"{base}/missing.json"]) == 1
    assert (
        f"downloading the neighbour sets from {base}/missing.json failed" in capsys.readouterr().err
    )
