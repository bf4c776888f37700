"""Kinds of rule. Each module holds a Rule subclass (settings, checked in `__post_init__`) and its evaluator."""
