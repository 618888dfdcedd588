"""builtin:wordlm and builtin:mixer1d: the second language model and the non-language AdamW model of
benchmarks/adam_rules.py (construct, one step, a recipe that converts)."""
from __future__ import annotations

import math

import pytest
import torch

import bsadvisor
from bsadvisor.core.baseline import baseline_of
from bsadvisor.runtime.recipe import options_for_target
from bsadvisor.targets.builtins import WORDLM_SEQ_LEN, mixer1d, wordlm, wordlm_words
from bsadvisor.targets.loading import load_target
from bsadvisor.targets.target import check_target
from test_charlm import assert_builds_deterministically


def _recipe_plan(t):
    """The target's own recipe at its B0, as advise and validate read it: converted, then the original it
    converts (the original schedule at fixed B0, from the plan's recorded inputs)."""
    prepared = options_for_target(t)
    assert prepared.note and "own recipe" in prepared.note
    plan = bsadvisor.recommend(prepared.options)
    assert plan.stages[-1].batch_size > t.batch_size  # the recipe converts into a growing batch
    return baseline_of(plan)


def _one_step(t):
    x, y = (d[:t.batch_size] for d in t.train_dataset.tensors)
    opt = t.make_optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    before = float(t.loss_fn(t.model, (x, y)).detach())
    opt.zero_grad()
    t.loss_fn(t.model, (x, y)).backward()
    opt.step()
    assert math.isfinite(before) and math.isfinite(float(t.loss_fn(t.model, (x, y)).detach()))
    return before


def test_wordlm_builds_steps_and_its_recipe_converts():
    t = check_target(load_target("builtin:wordlm"))
    x, y = t.train_dataset.tensors
    assert x.shape == (t.dataset_size, WORDLM_SEQ_LEN) and torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < t.metadata["vocab"] and t.metadata["vocab"] > 1000
    # near-uniform first predictions: cross-entropy ≈ ln(vocab)
    assert abs(_one_step(t) - math.log(t.metadata["vocab"])) < 0.1
    m = t.metadata
    assert m["schedule_unit"] == "step" and "LinearLR" in m["schedule"] and "CosineAnnealingLR" in m["schedule"]
    plan = _recipe_plan(t)
    assert plan.updates == m["epochs"] * -(-t.dataset_size // t.batch_size)
    assert isinstance(t.metric_fn(t.model, (x[:4], y[:4])), float)


def test_wordlm_is_other_text_than_charlm_and_builds_deterministically():
    words = wordlm_words()
    assert len(words) > 100_000 and "def" not in words[:50]
    assert_builds_deterministically(wordlm)


def test_mixer1d_builds_steps_and_its_recipe_converts():
    pytest.importorskip("mnist1d")
    t = check_target(load_target("builtin:mixer1d"))
    assert t.dataset_size == 32000 and t.optimizer == "adamw"
    _one_step(t)
    assert t.model(t.train_dataset.tensors[0][:3]).shape == (3, 10)
    plan = _recipe_plan(t)
    assert plan.updates == t.metadata["epochs"] * t.dataset_size // t.batch_size
    assert_builds_deterministically(mixer1d)


def test_sorter_is_a_sorting_task_with_a_one_epoch_recipe():
    from bsadvisor.targets.builtins import SORTER_LEN, SORTER_VOCAB, sorter

    t = check_target(load_target("builtin:sorter"))
    x, y = t.train_dataset.tensors
    assert x.shape == (t.dataset_size, 2 * SORTER_LEN - 1) and torch.equal(x[:, 1:], y[:, :-1])
    full = torch.cat([x, y[:, -1:]], dim=1)
    # the second half is the first half sorted, every number in 0..31
    assert torch.equal(full[:, SORTER_LEN:], full[:, :SORTER_LEN].sort(dim=1).values)
    assert int(full.min()) >= 0 and int(full.max()) == SORTER_VOCAB - 1
    # near-uniform first predictions over the 32 numbers: cross-entropy of the sorted half ≈ ln 32
    assert abs(_one_step(t) - math.log(SORTER_VOCAB)) < 0.1
    # the loss reads the sorted half only: changing the unsorted targets (y's first SORTER_LEN-1) changes nothing
    xb, yb = x[:8], y[:8].clone()
    before = float(t.loss_fn(t.model, (xb, yb)))
    yb[:, :SORTER_LEN - 1] = (yb[:, :SORTER_LEN - 1] + 1) % SORTER_VOCAB
    assert float(t.loss_fn(t.model, (xb, yb))) == before
    assert t.metric_fn(t.model, (xb, yb)) == pytest.approx(-before)
    plan = _recipe_plan(t)
    assert plan.updates == t.dataset_size // t.batch_size and t.metadata["epochs"] == 1
    assert_builds_deterministically(sorter)
