"""Robustness of classifiers under adversarial attack, on TextAttack.

TextAttack needs transformers < 5, so it runs in an environment of its own that
``loyalkit attack setup`` builds (``attack_env``); ``isolated.AttackWorker`` runs its search there
and answers its model queries in this process (``attack_worker`` is the worker's side). Importing
this package does not import TextAttack.
``textattack_setup`` prepares the offline resources and imports TextAttack without downloads
(``neighbour_sets`` fetches or copies TextFooler-offline's checked synonym file;
``resource_check`` tells, before any attack, what a recipe still lacks);
``recipes`` builds the attacks (TextFooler-offline, PWWS-offline, DeepWordBug, TextAttack's own);
``attack_runner`` runs them on a model and a dataset; ``adversarial_transfer`` feeds the adversarial
examples crafted on one model to another. Names below are re-exported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalkit.lazy_exports import lazy_exports

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AttackConfig": "loyalkit.robustness.attack_runner",
    "AttackReport": "loyalkit.robustness.attack_runner",
    "AttackWorker": "loyalkit.robustness.isolated",
    "WorkerError": "loyalkit.robustness.isolated",
    "setup_environment": "loyalkit.robustness.attack_env",
    "DynamicPaddingModelWrapper": "loyalkit.robustness.model_wrapper",
    "MissingResourceError": "loyalkit.robustness.textattack_setup",
    "OfflineResources": "loyalkit.robustness.textattack_setup",
    "RECIPE_NAMES": "loyalkit.robustness.recipes",
    "adversarial_loyalty": "loyalkit.robustness.adversarial_transfer",
    "attack_model": "loyalkit.robustness.attack_runner",
    "build_attack": "loyalkit.robustness.recipes",
    "import_textattack": "loyalkit.robustness.textattack_setup",
    "prepare_nltk_data": "loyalkit.robustness.textattack_setup",
    "prepare_textattack_cache": "loyalkit.robustness.textattack_setup",
    "wrap_model": "loyalkit.robustness.model_wrapper",
}

__all__ = [
    "RECIPE_NAMES",
    "AttackConfig",
    "AttackReport",
    "AttackWorker",
    "DynamicPaddingModelWrapper",
    "MissingResourceError",
    "OfflineResources",
    "adversarial_loyalty",
    "attack_model",
    "build_attack",
    "import_textattack",
    "prepare_nltk_data",
    "prepare_textattack_cache",
    "setup_environment",
    "wrap_model",
    "WorkerError",
]

if TYPE_CHECKING:
    from loyalkit.robustness.adversarial_transfer import adversarial_loyalty
    from loyalkit.robustness.attack_env import setup_environment
    from loyalkit.robustness.attack_runner import AttackConfig, AttackReport, attack_model
    from loyalkit.robustness.isolated import AttackWorker, WorkerError
    from loyalkit.robustness.model_wrapper import DynamicPaddingModelWrapper, wrap_model
    from loyalkit.robustness.recipes import RECIPE_NAMES, build_attack
    from loyalkit.robustness.textattack_setup import (
        MissingResourceError,
        OfflineResources,
        import_textattack,
        prepare_nltk_data,
        prepare_textattack_cache,
    )


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
