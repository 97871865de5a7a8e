"""int8 for CPU deployment: OpenVINO with NNCF's static int8 quantization, run as a torch module.

:func:`export_int8` converts a sequence classifier with ``openvino.convert_model``, quantizes it
with NNCF's post-training quantization (``nncf.quantize``, transformer preset: int8 weights per
output channel, int8 activations with ranges calibrated on batches the caller passes) and writes
``openvino_model.xml``/``.bin`` and ``config.json`` into a folder. :class:`OpenVINOInt8Classifier`
loads that folder and runs it on CPU behind a classifier's usual ``forward`` (``input_ids``,
``attention_mask``, ``token_type_ids``, ``labels`` -> ``SequenceClassifierOutput`` with ``loss``),
so ``Trainer.predict``/``evaluate``, loyalkit's metrics and attacks use it as they use any model.

Why this path (``benchmarks/bench_int8.py``, MiniLM-L6 on SST-2, 1 thread): it measured 3.72x over
fp32 PyTorch on a quiet machine and 3.81x beside a competing load, with label loyalty 0.990, where
torchao's eager int8 ran at 0.89x/0.79x and ONNX Runtime's dynamic int8 at 2.02x/1.72x (loyalty
0.979). On CPUs with AMX or AVX-512 bf16, OpenVINO runs the ops it leaves in float in bf16 (its
default inference precision there); with those forced to f32 it ran 3.67x, and with AMX capped
away (int8 on AVX-512 VNNI) 2.98x quiet and 2.89x loaded (``benchmarks/RESULTS.md``).
optimum-intel wraps the same two libraries but requires transformers < 5.6, so this module calls
them directly.

Example:
    >>> import tempfile, torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=64)
    >>> model = BertForSequenceClassification(config).eval()
    >>> batches = [{"input_ids": torch.randint(1, 100, (4, 8)),
    ...             "attention_mask": torch.ones(4, 8, dtype=torch.long)}]
    >>> folder = tempfile.mkdtemp()
    >>> export_int8(model, folder, batches).quantized_matmuls > 0
    True
    >>> int8 = OpenVINOInt8Classifier.from_pretrained(folder)
    >>> int8(**batches[0]).logits.shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import contextlib
import inspect
import io
import itertools
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "OPENVINO_FILE",
    "Int8Export",
    "OpenVINOInt8Classifier",
    "calibration_batches",
    "export_int8",
    "is_openvino_int8",
]

logger = logging.getLogger(__name__)

#: The IR file a folder written by :func:`export_int8` holds (weights in the ``.bin`` beside it).
OPENVINO_FILE = "openvino_model.xml"
#: The key of ``config.json`` saying how the folder's model was made.
CONFIG_KEY = "loyalkit_int8"
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Int8Export:
    """What :func:`export_int8` wrote: the folder, the inputs, and how much became int8."""

    folder: Path
    input_names: tuple[str, ...]
    quantized_matmuls: int
    """Matrix multiplies whose weights are int8 (FakeQuantize on the weight path)."""
    float_matmuls: int
    """Matrix multiplies with constant weights left in float."""
    calibration_rows: int


def calibration_batches(
    dataset: Sequence[Any] | Iterable[Any],
    collate: Callable[[list[Any]], Mapping[str, Any]],
    rows: int,
    batch_size: int = 32,
) -> Iterator[dict[str, torch.Tensor]]:
    """The first ``rows`` examples of ``dataset``, collated by ``collate`` in batches of
    ``batch_size``, as :func:`export_int8` takes them: tensors on the CPU, labels dropped.

    The first rows, in order, so the calibration does not depend on a sampler's shuffling.
    """
    if isinstance(dataset, Sized) and not isinstance(dataset, torch.utils.data.IterableDataset):
        examples = [dataset[i] for i in range(min(rows, len(dataset)))]
    else:
        examples = list(itertools.islice(iter(dataset), rows))
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        yield {
            name: value.detach().cpu()
            for name, value in batch.items()
            if name != "labels" and isinstance(value, torch.Tensor)
        }


def _input_names(model: nn.Module, batch: Mapping[str, Any]) -> tuple[str, ...]:
    accepted = inspect.signature(model.forward).parameters
    names = tuple(n for n in _INPUT_NAMES if n in batch and n in accepted)
    if "input_ids" not in names:
        raise ValueError("calibration: each batch must hold `input_ids` (a tokenized batch)")
    return names


def _weight_matmuls(ov_model: Any) -> tuple[int, int]:
    """(int8, float) counts of MatMul ops whose second input is a constant weight path."""
    quantized = floating = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        node = op.input_value(1).get_node()
        path = []
        while node.get_type_name() in (
            "Convert",
            "FakeQuantize",
            "Multiply",
            "Subtract",
            "Reshape",
        ):
            path.append(node.get_type_name())
            if node.get_type_name() == "FakeQuantize":
                break
            node = node.input_value(0).get_node()
        if node.get_type_name() == "Constant" or "FakeQuantize" in path:
            constant_type = node.get_output_element_type(0).get_type_name()
            if "FakeQuantize" in path or constant_type in ("i8", "u8"):
                quantized += 1
            else:
                floating += 1
    return quantized, floating


def export_int8(
    model: nn.Module,
    save_directory: str | Path,
    calibration: Iterable[Mapping[str, torch.Tensor]],
    *,
    max_rows: int = 512,
) -> Int8Export:
    """Quantize ``model`` (a float sequence classifier) to int8 with NNCF; write it to a folder.

    ``calibration`` yields tokenized batches like those the model will see (``input_ids`` and
    ``attention_mask``, plus ``token_type_ids`` for BERT); at most ``max_rows`` rows are used to
    set the activation ranges. The float model is left unchanged. Raises ``ValueError`` when no
    matrix multiply came out int8 (nothing would be gained, and the folder would lie).
    """
    import nncf
    import openvino as ov

    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    config = getattr(model, "config", None)
    if config is None:  # checked before the conversion and calibration it would waste
        raise TypeError("`model` must carry a transformers `config` (a PreTrainedModel)")
    if not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"`max_rows` must be a positive int, got {max_rows!r}")
    batches, rows = [], 0
    for batch in calibration:
        if rows >= max_rows:
            break
        if "input_ids" not in batch:
            raise ValueError("calibration: each batch must hold `input_ids` (a tokenized batch)")
        batches.append(dict(batch))
        rows += int(batch["input_ids"].shape[0])
    if not batches:
        raise ValueError("calibration: no batches given (NNCF needs examples to set int8 ranges)")
    names = _input_names(model, batches[0])
    was_training = model.training
    model.eval()
    example = {n: batches[0][n].cpu() for n in names}
    try:
        with torch.no_grad():
            converted = ov.convert_model(
                model,
                example_input=example,
                input=[(n, ov.PartialShape([-1, -1])) for n in names],
            )
    finally:
        model.train(was_training)
    dataset = nncf.Dataset(batches, lambda batch: {n: batch[n].cpu().numpy() for n in names})
    progress = io.StringIO()
    # NNCF draws its progress bars on stdout: a library call should not print (they go to the log).
    with contextlib.redirect_stdout(progress):
        quantized = nncf.quantize(
            converted, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches)
        )
    logger.debug("nncf.quantize: %s", progress.getvalue())
    int8_count, float_count = _weight_matmuls(quantized)
    if int8_count == 0:
        raise ValueError("export_int8: NNCF left every matrix multiply in float; nothing was saved")
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(folder / OPENVINO_FILE), compress_to_fp16=False)
    data = config.to_dict()
    data[CONFIG_KEY] = {
        "format": "openvino",
        "quantization": "nncf static int8 (transformer preset)",
        "input_names": list(names),
        "parameters": sum(p.numel() for p in model.parameters()),
        "calibration_rows": rows,
        "quantized_matmuls": int8_count,
        "float_matmuls": float_count,
    }
    (folder / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return Int8Export(folder, names, int8_count, float_count, rows)


def is_openvino_int8(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a model written by :func:`export_int8`."""
    return (Path(model_dir) / OPENVINO_FILE).is_file()


def _local_folder(folder: str | Path) -> Path:
    """``folder`` itself, or a Hub repo id's files downloaded (cached) by ``huggingface_hub``."""
    path = Path(folder)
    if path.is_dir() or isinstance(folder, Path) or str(folder).count("/") != 1:
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(folder)))


class OpenVINOInt8Classifier(nn.Module):
    """A folder written by :func:`export_int8`, run by OpenVINO on CPU as a torch classifier.

    ``threads`` fixes OpenVINO's thread count; by default it follows ``torch.get_num_threads()``
    (recompiling, a fraction of a second, when that changes), so ``torch.set_num_threads`` pins it
    like any torch model. It has no trainable parameters: use it to predict and evaluate, not to
    train. ``num_parameters`` is the float model's parameter count (int8 weights count as their
    logical elements).
    """

    main_input_name = "input_ids"
    # Its loss is a mean over the batch, not a sum over num_items_in_batch: without this the Trainer
    # (seeing **unused) would scale it by the number of processes (2x the loss under torchrun).
    accepts_loss_kwargs = False

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import openvino as ov
        from transformers import AutoConfig

        folder = _local_folder(folder)
        if not is_openvino_int8(folder):
            raise FileNotFoundError(
                f"`folder`: no {OPENVINO_FILE} in {folder} (write one with export_int8)"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"`threads` must be a positive int or None, got {threads!r}")
        self.folder = folder
        self.config = AutoConfig.from_pretrained(folder)
        made = getattr(self.config, CONFIG_KEY)
        self.input_names: tuple[str, ...] = tuple(made["input_names"])
        self.num_parameters = int(made["parameters"])
        self.fixed_threads = threads
        self._model = ov.Core().read_model(str(folder / OPENVINO_FILE))
        self._compiled_threads = 0
        self._request: Any = None
        # Trainer and accelerate read a module's device from its tensors: one empty buffer, on CPU.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, threads: int | None = None
    ) -> OpenVINOInt8Classifier:
        """Load a folder written by :func:`export_int8` (or :meth:`save_pretrained`), or a Hub
        repo id (``"owner/name"``) holding one."""
        return cls(folder, threads)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Copy the model's files (IR, weights, config) into ``save_directory``."""
        target = Path(save_directory)
        target.mkdir(parents=True, exist_ok=True)
        for name in (OPENVINO_FILE, OPENVINO_FILE.replace(".xml", ".bin"), "config.json"):
            if (self.folder / name).resolve() != (target / name).resolve():
                shutil.copyfile(self.folder / name, target / name)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _infer_request(self) -> Any:
        import openvino as ov

        threads = self.fixed_threads or torch.get_num_threads()
        if threads != self._compiled_threads:
            settings = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
            compiled = ov.Core().compile_model(self._model, "CPU", settings)
            self._request = compiled.create_infer_request()
            self._compiled_threads = threads
        return self._request

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused: Any,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        given = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
        }
        if attention_mask is None and "attention_mask" in self.input_names:
            given["attention_mask"] = torch.ones_like(input_ids)
        if token_type_ids is None and "token_type_ids" in self.input_names:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feed = {n: given[n].detach().cpu().numpy() for n in self.input_names}  # type: ignore[union-attr]
        request = self._infer_request()
        request.infer(feed)
        logits = torch.from_numpy(request.get_output_tensor(0).data.copy()).to(input_ids.device)
        loss = None
        if labels is not None:  # transformers' own loss of its *ForSequenceClassification heads
            from transformers.loss.loss_utils import ForSequenceClassificationLoss

            loss = ForSequenceClassificationLoss(labels, logits, self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits)
