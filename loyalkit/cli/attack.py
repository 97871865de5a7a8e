"""``loyalkit attack setup``: TextAttack's isolated environment; ``loyalkit attack prepare-data``:
the local files TextAttack and the offline recipes read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from loyalkit.robustness import attack_env, neighbour_sets
from loyalkit.robustness.textattack_setup import (
    DEBIAN_WORDNET_DIR,
    OfflineResources,
    prepare_nltk_data,
    prepare_textattack_cache,
)
from loyalkit.robustness.wordnet_files import DEBIAN_LEXNAMES_MAN_PAGE


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``attack`` with its ``prepare-data`` action."""
    parser = subparsers.add_parser(
        "attack",
        help="set up the adversarial attacks (TextAttack in an isolated environment)",
        description="The attacks run on TextAttack, in an environment of its own (TextAttack "
        "needs transformers < 5; yours keeps its transformers). `setup` builds that environment "
        "once; `run` attacks a saved model; `prepare-data` writes the offline files the attacks "
        "read instead of downloading.",
    )
    actions = parser.add_subparsers(dest="attack_command", metavar="ACTION", required=True)
    setup = actions.add_parser(
        "setup",
        help="build (or reuse) TextAttack's isolated environment",
        description="Create a virtual environment for TextAttack (torch "
        f"{attack_env.TORCH_REQUIREMENT.split('==')[1]} CPU build first, then "
        + " ".join(attack_env.REQUIREMENTS)
        + "), reuse it when it is already built for the same requirements, and print where it is "
        "and its size. loyalkit's attacks run their search there and query your model in your "
        "own process. Needs the package index once; offline afterwards.",
    )
    setup.add_argument(
        "--env-dir",
        type=Path,
        metavar="DIR",
        help=f"where the environment lives (default: ${attack_env.ENV_VARIABLE}, else "
        f"{attack_env.default_location()})",
    )
    setup.add_argument(
        "--python",
        type=Path,
        metavar="PATH",
        help="use this existing interpreter (with textattack, torch, transformers<5 and "
        "scikit-learn) instead of building one",
    )
    setup.add_argument("--force", action="store_true", help="rebuild even if it is up to date")
    from loyalkit.cli import attack_run

    attack_run.add_arguments(
        actions.add_parser(
            "run",
            help="attack a saved classifier on a data file; print and save the outcome",
            description="Attack a saved classifier (queried in this process) on a seeded sample "
            "of a TSV/CSV/JSON/JSONL file with TextAttack in its isolated environment; print the "
            "summary and write it with every example to --output.",
        )
    )
    default = OfflineResources.default()
    prepare = actions.add_parser(
        "prepare-data",
        help="write the files the offline recipes read (stop words, WordNet, neighbour sets)",
        description="Write an NLTK data folder: scikit-learn's English stop words as "
        "corpora/stopwords/english (TextAttack's import needs a stop-word list) and WordNet 3.0 "
        "from Debian's wordnet-base and wordnet-sense-index as corpora/wordnet (PWWS and "
        "TextFooler-offline), with the lexnames table read from wordnet-base's lexnames(5WN) man "
        "page; create TextAttack's cache folder with the marker file that stops its start-up "
        "downloads; and, with --neighbours FILE, put a checked copy of the counter-fitted "
        "neighbour sets (TextFooler-offline's candidates) in that cache folder. Nothing is "
        "downloaded unless --online is given: then NLTK's stopwords and wordnet come through "
        "nltk.download and the neighbour sets from --neighbours-url.",
    )
    prepare.add_argument(
        "--target",
        type=Path,
        default=default.nltk_data,
        metavar="DIR",
        help=f"NLTK data folder to write (default: {default.nltk_data})",
    )
    prepare.add_argument(
        "--cache-dir",
        type=Path,
        default=default.cache_dir,
        metavar="DIR",
        help=f"TextAttack's cache folder, its TA_CACHE_DIR (default: {default.cache_dir})",
    )
    wordnet = prepare.add_mutually_exclusive_group()
    wordnet.add_argument(
        "--wordnet-dir",
        type=Path,
        default=DEBIAN_WORDNET_DIR,
        metavar="DIR",
        help=f"WordNet 3.0 database folder (default: {DEBIAN_WORDNET_DIR}, from "
        "`apt-get install wordnet-base wordnet-sense-index`)",
    )
    wordnet.add_argument(
        "--no-wordnet",
        action="store_true",
        help="stop words only (enough for DeepWordBug)",
    )
    prepare.add_argument(
        "--lexnames",
        type=Path,
        metavar="FILE",
        help="WordNet's lexnames table, needed by NLTK and not shipped as a file by Debian "
        f"(default: read from {DEBIAN_LEXNAMES_MAN_PAGE}, the man page wordnet-base installs)",
    )
    prepare.add_argument(
        "--neighbours",
        type=Path,
        metavar="FILE",
        help="a local copy of counterfitted_neighbors.json (from "
        f"{neighbour_sets.NEIGHBOURS_SOURCE}), checked against its sha256 and copied into the "
        "cache folder, where textfooler-offline finds it",
    )
    prepare.add_argument(
        "--online",
        action="store_true",
        help="download NLTK's own stopwords and wordnet with nltk.download, and the "
        "counter-fitted neighbour sets from --neighbours-url, instead",
    )
    prepare.add_argument(
        "--neighbours-url",
        default=neighbour_sets.NEIGHBOURS_URL,
        metavar="URL",
        help=f"where --online downloads the neighbour sets (default: {neighbour_sets.NEIGHBOURS_URL})",
    )
    prepare.add_argument(
        "--nltk-index-url",
        metavar="URL",
        help="NLTK data index --online downloads from (default: NLTK's own; e.g. a mirror)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``loyalkit attack ACTION``."""
    if args.attack_command == "setup":
        return _setup(args)
    if args.attack_command == "run":
        from loyalkit.cli import attack_run

        return attack_run.run(args)
    return _prepare_data(args)


def _setup(args: argparse.Namespace) -> int:
    found, built = attack_env.setup_environment(args.env_dir, python=args.python, force=args.force)
    state = "built" if built else ("recorded" if found.external else "up to date, reused")
    print(f"TextAttack environment: {found.folder} ({state})")
    print(f"  interpreter:          {found.python}")
    if not found.external:
        size = attack_env.folder_size(found.folder)
        print(f"  size:                 {size / 2**20:.0f} MiB")
    return 0


def _prepare_data(args: argparse.Namespace) -> int:
    if args.online and args.neighbours is not None:
        raise ValueError("--neighbours FILE (a local copy) and --online exclude each other")
    target = prepare_nltk_data(
        args.target,
        wordnet_dir=None if args.no_wordnet else args.wordnet_dir,
        lexnames=args.lexnames,
        online=args.online,
        nltk_index_url=args.nltk_index_url,
    )
    marker = prepare_textattack_cache(args.cache_dir)
    resources = OfflineResources(nltk_data=target, cache_dir=args.cache_dir)
    neighbours = resources.neighbours_file()
    if args.online:
        neighbour_sets.install_neighbours(neighbours, url=args.neighbours_url)
    elif args.neighbours is not None:
        neighbour_sets.install_neighbours(neighbours, source=args.neighbours)
    corpora = target.resolve() / "corpora"
    wordnet = next((p for p in (corpora / "wordnet", corpora / "wordnet.zip") if p.exists()), None)
    print(f"NLTK data:        {target.resolve()}")
    print(f"  stop words:     {corpora / 'stopwords'}")
    print(f"  WordNet:        {wordnet or 'no'}")
    print(f"TextAttack cache: {marker.parent.resolve()} (marker {marker.name})")
    print(f"  neighbour sets: {neighbours.resolve() if neighbours.is_file() else 'no'}")
    default = OfflineResources.default()
    if (target, args.cache_dir) != (default.nltk_data, default.cache_dir):
        print("Not the default folders: pass them to the attacks, e.g.")
        print(
            f"  OfflineResources(nltk_data={str(target.resolve())!r}, "
            f"cache_dir={str(marker.parent.resolve())!r})"
        )
    from loyalkit.robustness.resource_check import missing_resources

    for recipe in ("deepwordbug", "pwws-offline", "textfooler-offline"):
        lacking = missing_resources(recipe, resources)
        print(f"{recipe + ':':20s}{'ready' if not lacking else 'lacks ' + '; '.join(lacking)}")
    return 0
