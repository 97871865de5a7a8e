"""The study: compress a teacher every way and report accuracy, loyalty and robustness."""
