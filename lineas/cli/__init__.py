"""Hydra wiring of the entry points: recipes, typed configs, and one-line errors."""
