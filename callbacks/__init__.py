"""When it is done during training: thin ``transformers.TrainerCallback`` adapters over
``loyalkit.compression`` and ``loyalkit.metrics``.

Names are re-exported lazily: ``import loyalkit.callbacks`` imports nothing heavy until one is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalkit.lazy_exports import lazy_exports

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AttackCallback": "loyalkit.callbacks.attack",
    "DistillationCallback": "loyalkit.callbacks.distillation",
    "FfnPruningCallback": "loyalkit.callbacks.ffn_pruning",
    "FfnPruningConfig": "loyalkit.callbacks.ffn_pruning",
    "HeadPruningCallback": "loyalkit.callbacks.head_pruning",
    "HeadPruningConfig": "loyalkit.callbacks.head_pruning",
    "LayerDroppingCallback": "loyalkit.callbacks.layer_dropping",
    "LayerDroppingConfig": "loyalkit.callbacks.layer_dropping",
    "LoyaltyCallback": "loyalkit.callbacks.loyalty",
    "MagnitudePruningCallback": "loyalkit.callbacks.magnitude_pruning",
    "MagnitudePruningConfig": "loyalkit.callbacks.magnitude_pruning",
    "ModuleReplacementCallback": "loyalkit.callbacks.module_replacement",
    "ModuleReplacementConfig": "loyalkit.callbacks.module_replacement",
    "OpenVINOInt8ExportCallback": "loyalkit.callbacks.int8_export",
    "OpenVINOInt8ExportConfig": "loyalkit.callbacks.int8_export",
    "PostTrainingQuantizationCallback": "loyalkit.callbacks.quantization",
    "PostTrainingQuantizationConfig": "loyalkit.callbacks.quantization",
    "QuantizationAwareTrainingCallback": "loyalkit.callbacks.quantization",
    "QuantizationAwareTrainingConfig": "loyalkit.callbacks.quantization",
    "TokenLoyaltyCallback": "loyalkit.callbacks.token_loyalty",
}

__all__ = [
    "AttackCallback",
    "DistillationCallback",
    "FfnPruningCallback",
    "FfnPruningConfig",
    "HeadPruningCallback",
    "HeadPruningConfig",
    "LayerDroppingCallback",
    "LayerDroppingConfig",
    "LoyaltyCallback",
    "MagnitudePruningCallback",
    "MagnitudePruningConfig",
    "ModuleReplacementCallback",
    "ModuleReplacementConfig",
    "OpenVINOInt8ExportCallback",
    "OpenVINOInt8ExportConfig",
    "PostTrainingQuantizationCallback",
    "PostTrainingQuantizationConfig",
    "QuantizationAwareTrainingCallback",
    "QuantizationAwareTrainingConfig",
    "TokenLoyaltyCallback",
]

if TYPE_CHECKING:
    from loyalkit.callbacks.attack import AttackCallback
    from loyalkit.callbacks.distillation import DistillationCallback
    from loyalkit.callbacks.ffn_pruning import FfnPruningCallback, FfnPruningConfig
    from loyalkit.callbacks.head_pruning import (
        HeadPruningCallback,
        HeadPruningConfig,
    )
    from loyalkit.callbacks.int8_export import (
        OpenVINOInt8ExportCallback,
        OpenVINOInt8ExportConfig,
    )
    from loyalkit.callbacks.layer_dropping import LayerDroppingCallback, LayerDroppingConfig
    from loyalkit.callbacks.loyalty import LoyaltyCallback
    from loyalkit.callbacks.magnitude_pruning import (
        MagnitudePruningCallback,
        MagnitudePruningConfig,
    )
    from loyalkit.callbacks.module_replacement import (
        ModuleReplacementCallback,
        ModuleReplacementConfig,
    )
    from loyalkit.callbacks.quantization import (
        PostTrainingQuantizationCallback,
        PostTrainingQuantizationConfig,
        QuantizationAwareTrainingCallback,
        QuantizationAwareTrainingConfig,
    )
    from loyalkit.callbacks.token_loyalty import TokenLoyaltyCallback


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
