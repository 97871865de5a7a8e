"""Robustness of classifiers under adversarial attack, on TextAttack (``pip install loyalkit[attack]``).

Importing this package does not import TextAttack; it is imported when an attack is built.
"""
