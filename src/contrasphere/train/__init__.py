"""The trainer (the ``train`` extra): one loop for every recipe, on one process or many (``torchrun``).

Layout, from configuration down to the loop:

- :mod:`.config`: the typed recipe (dataclasses), ``--set`` overrides and validation;
- :mod:`.recipes`: the catalogue of registered recipes, each with a tiny preset;
- :mod:`.data`, :mod:`.augment`, :mod:`.models`: datasets, batched augmentation, encoders;
- :mod:`.tasks`: what differs between image, text and image-text training; a task turns a batch into exactly the
  loss's keyword arguments, so a step is ``loss_fn(**task.embed(model, batch))``;
- :mod:`.checkpoint`, :mod:`.loop`: checkpoints and the loop itself; :mod:`.runs`: run folders and evaluation.

Nothing in :mod:`contrasphere`'s core imports this package.
"""

from .config import Recipe
from .loop import build, train
from .recipes import get_recipe, list_recipes, register_recipe

__all__ = ["Recipe", "build", "get_recipe", "list_recipes", "register_recipe", "train"]
