"""Recipes and their overrides: typed ``--set key=value`` parsing, the JSON round trip, every recipe's tiny preset."""

from __future__ import annotations

import pytest

from contrasphere.train.config import Recipe, all_keys, apply_overrides
from contrasphere.train.recipes import get_recipe, list_recipes


def test_recipe_overrides_are_typed_and_round_trip():
    overrides = ["optim.lr=0.01", "augment.crop_scale=0.3,1", "model.widths=[8,16]", "train.precision=bf16"]
    r = get_recipe("digits", overrides=[*overrides, "eval.linear_probe=false", "loss.args.t=3"])
    assert (r.optim.lr, r.augment.crop_scale, r.model.widths) == (0.01, (0.3, 1.0), (8, 16))
    assert r.train.precision == "bf16" and r.eval.linear_probe is False and r.loss.args["t"] == 3
    assert Recipe.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="not a valid int"):
        apply_overrides(r, ["train.epochs=1.5"])
    with pytest.raises(ValueError, match="train.precision must be"):
        apply_overrides(r, ["train.precision=fp8"])
    with pytest.raises(ValueError, match="did you mean train.epochs"):
        apply_overrides(r, ["train.epoch=3"])
    changed = apply_overrides(get_recipe("digits"), ["loss.args.temperature=0.2", "loss.name=nt_xent"])
    assert changed.loss.args == {"temperature": 0.2}  # the new loss starts from its own defaults
    assert "optim.lr" in all_keys() and "augment.crop_size" in all_keys()


def test_every_recipe_states_its_fields_and_has_a_tiny_preset():
    for name in list_recipes():
        full, tiny = get_recipe(name), get_recipe(name, "tiny")
        assert full.description and full.name == name
        assert tiny.train.max_steps <= 3 and tiny.data.train_samples <= 64


def test_the_ring_mode_is_refused_for_a_loss_without_one():
    from contrasphere.errors import ConfigError
    from contrasphere.train.recipes import get_recipe

    with pytest.raises(ConfigError, match="loss.distributed=ring computes"):
        get_recipe("digits", "tiny", ["loss.name=supcon", "loss.distributed=ring"])
    assert get_recipe("digits", "tiny", ["loss.name=clip", "loss.distributed=ring"]).loss.distributed == "ring"
