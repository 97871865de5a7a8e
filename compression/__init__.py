"""What is done to a model: plain PyTorch and transformers model classes, no Trainer.

Each method lives in its own module (``magnitude_pruning``, ``sparsity_schedules``, ``head_pruning``,
``head_pruning_schedule``, ``head_importance``, ``distillation``, ``module_replacement``,
``quantization``; ``architectures`` finds each family's transformer layers; ``schedules`` is the
step -> value protocol every schedule follows); the names below are
re-exported lazily, so ``import loyalkit.compression`` costs nothing until a name is used (torchao,
for one, is slow to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalkit.lazy_exports import lazy_exports

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ConstantReplacementSchedule": "loyalkit.compression.module_replacement",
    "CubicSchedule": "loyalkit.compression.sparsity_schedules",
    "DistillationConfig": "loyalkit.compression.distillation",
    "Distiller": "loyalkit.compression.distillation",
    "HeadMap": "loyalkit.compression.head_pruning",
    "HeadPruningSchedule": "loyalkit.compression.head_pruning_schedule",
    "Int8Quantization": "loyalkit.compression.quantization",
    "LinearReplacementSchedule": "loyalkit.compression.module_replacement",
    "LinearSchedule": "loyalkit.compression.sparsity_schedules",
    "ModuleReplacementLayers": "loyalkit.compression.module_replacement",
    "OneShotSchedule": "loyalkit.compression.sparsity_schedules",
    "PruningMasks": "loyalkit.compression.magnitude_pruning",
    "PruningScope": "loyalkit.compression.magnitude_pruning",
    "ReplaceableBlock": "loyalkit.compression.module_replacement",
    "ReplacementSchedule": "loyalkit.compression.module_replacement",
    "Schedule": "loyalkit.compression.schedules",
    "SparsitySchedule": "loyalkit.compression.sparsity_schedules",
    "TeacherLogitCache": "loyalkit.compression.distillation",
    "LayerStack": "loyalkit.compression.architectures",
    "attention_blocks": "loyalkit.compression.head_pruning",
    "block_weight_modules": "loyalkit.compression.architectures",
    "block_weight_share": "loyalkit.compression.quantization",
    "check_layer_map": "loyalkit.compression.distillation",
    "check_same_vocabulary": "loyalkit.compression.distillation",
    "convert_qat": "loyalkit.compression.quantization",
    "distillation_loss": "loyalkit.compression.distillation",
    "export_successor": "loyalkit.compression.module_replacement",
    "find_module_replacement": "loyalkit.compression.module_replacement",
    "gradient_head_importance": "loyalkit.compression.head_importance",
    "head_gates": "loyalkit.compression.head_importance",
    "head_weights": "loyalkit.compression.head_pruning",
    "hidden_state_loss": "loyalkit.compression.distillation",
    "is_fake_quantized": "loyalkit.compression.quantization",
    "layer_stack": "loyalkit.compression.architectures",
    "load_head_pruned": "loyalkit.compression.head_pruning",
    "logit_kd_loss": "loyalkit.compression.distillation",
    "magnitude_head_importance": "loyalkit.compression.head_importance",
    "magnitude_masks": "loyalkit.compression.magnitude_pruning",
    "magnitude_prune": "loyalkit.compression.magnitude_pruning",
    "prepare_module_replacement": "loyalkit.compression.module_replacement",
    "prepare_qat": "loyalkit.compression.quantization",
    "prunable_weights": "loyalkit.compression.magnitude_pruning",
    "prune_heads": "loyalkit.compression.head_pruning",
    "pruned_heads_from_config": "loyalkit.compression.head_pruning",
    "quantize_dynamic_int8": "loyalkit.compression.quantization",
    "remaining_heads": "loyalkit.compression.head_pruning",
    "replacement_schedule_from_dict": "loyalkit.compression.module_replacement",
    "save_quantized": "loyalkit.compression.quantization",
    "select_heads_to_prune": "loyalkit.compression.head_pruning",
    "sparsity": "loyalkit.compression.magnitude_pruning",
    "sparsity_per_tensor": "loyalkit.compression.magnitude_pruning",
    "supports_safetensors": "loyalkit.compression.quantization",
    "teacher_inputs": "loyalkit.compression.distillation",
    "zero_head_outputs": "loyalkit.compression.head_pruning",
    "zeroed_heads": "loyalkit.compression.head_pruning",
}

__all__ = [
    "ConstantReplacementSchedule",
    "CubicSchedule",
    "DistillationConfig",
    "Distiller",
    "HeadMap",
    "HeadPruningSchedule",
    "Int8Quantization",
    "LinearReplacementSchedule",
    "LinearSchedule",
    "ModuleReplacementLayers",
    "OneShotSchedule",
    "PruningMasks",
    "PruningScope",
    "ReplaceableBlock",
    "ReplacementSchedule",
    "Schedule",
    "SparsitySchedule",
    "TeacherLogitCache",
    "LayerStack",
    "attention_blocks",
    "block_weight_modules",
    "block_weight_share",
    "check_layer_map",
    "check_same_vocabulary",
    "convert_qat",
    "distillation_loss",
    "export_successor",
    "find_module_replacement",
    "gradient_head_importance",
    "head_gates",
    "head_weights",
    "hidden_state_loss",
    "is_fake_quantized",
    "layer_stack",
    "load_head_pruned",
    "logit_kd_loss",
    "magnitude_head_importance",
    "magnitude_masks",
    "magnitude_prune",
    "prepare_module_replacement",
    "prepare_qat",
    "prunable_weights",
    "prune_heads",
    "pruned_heads_from_config",
    "quantize_dynamic_int8",
    "remaining_heads",
    "replacement_schedule_from_dict",
    "save_quantized",
    "select_heads_to_prune",
    "sparsity",
    "sparsity_per_tensor",
    "supports_safetensors",
    "teacher_inputs",
    "zero_head_outputs",
    "zeroed_heads",
]

if TYPE_CHECKING:
    from loyalkit.compression.architectures import LayerStack, block_weight_modules, layer_stack
    from loyalkit.compression.distillation import (
        DistillationConfig,
        Distiller,
        TeacherLogitCache,
        check_layer_map,
        check_same_vocabulary,
        distillation_loss,
        hidden_state_loss,
        logit_kd_loss,
        teacher_inputs,
    )
    from loyalkit.compression.head_importance import (
        gradient_head_importance,
        head_gates,
        magnitude_head_importance,
    )
    from loyalkit.compression.head_pruning import (
        HeadMap,
        attention_blocks,
        head_weights,
        load_head_pruned,
        prune_heads,
        pruned_heads_from_config,
        remaining_heads,
        select_heads_to_prune,
        zero_head_outputs,
        zeroed_heads,
    )
    from loyalkit.compression.head_pruning_schedule import HeadPruningSchedule
    from loyalkit.compression.magnitude_pruning import (
        PruningMasks,
        PruningScope,
        magnitude_masks,
        magnitude_prune,
        prunable_weights,
        sparsity,
        sparsity_per_tensor,
    )
    from loyalkit.compression.module_replacement import (
        ConstantReplacementSchedule,
        LinearReplacementSchedule,
        ModuleReplacementLayers,
        ReplaceableBlock,
        ReplacementSchedule,
        export_successor,
        find_module_replacement,
        prepare_module_replacement,
        replacement_schedule_from_dict,
    )
    from loyalkit.compression.quantization import (
        Int8Quantization,
        block_weight_share,
        convert_qat,
        is_fake_quantized,
        prepare_qat,
        quantize_dynamic_int8,
        save_quantized,
        supports_safetensors,
    )
    from loyalkit.compression.schedules import Schedule
    from loyalkit.compression.sparsity_schedules import (
        CubicSchedule,
        LinearSchedule,
        OneShotSchedule,
        SparsitySchedule,
    )


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
