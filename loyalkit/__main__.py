"""``python -m loyalkit``: the same as the ``loyalkit`` command."""

from loyalkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
