"""loyalkit: how loyal and how robust is a compressed transformer classifier to its teacher?

Subpackages: ``loyalkit.metrics`` (the loyalty math and its ``evaluate`` modules),
``loyalkit.compression`` (what is done to a model), ``loyalkit.callbacks`` (when it is done during
training with a ``transformers.Trainer``). Importing ``loyalkit`` imports nothing heavy.
"""

__version__ = "0.1.0"
