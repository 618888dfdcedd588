"""builtin:charlm: the offline language-model target (bytes of standard-library source)."""
from __future__ import annotations

import math

import pytest
import torch

from bsadvisor.targets.builtins import CHARLM_SEQ_LEN, charlm, charlm_text


def test_windows_are_the_corpus_shifted_by_one():
    t = charlm()
    x, y = t.train_dataset.tensors
    assert x.shape == y.shape == (t.dataset_size, CHARLM_SEQ_LEN) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # the target is the input one byte on
    text = charlm_text()
    for i in (0, 777, t.dataset_size - 1):  # a window is a substring of the corpus, where it was cut
        start = i * (CHARLM_SEQ_LEN + 1)
        assert bytes(x[i].tolist()) + bytes([int(y[i, -1])]) == text[start:start + CHARLM_SEQ_LEN + 1]
    ex, _ = t.eval_dataset.tensors
    assert not set(map(bytes, ex[:50].tolist())) & set(map(bytes, x.tolist()))  # held out, not a copy


def test_the_model_is_causal():
    t = charlm()
    x = t.train_dataset.tensors[0][:2].clone()
    with torch.no_grad():
        before = t.model(x)
        x[:, 40] = (x[:, 40] + 1) % 256  # change one byte: no earlier position may notice
        after = t.model(x)
    assert torch.allclose(before[:, :40], after[:, :40], atol=1e-6)
    assert not torch.allclose(before[:, 40:], after[:, 40:])


@pytest.mark.slow  # trains the language model
def test_initial_loss_is_about_uniform_and_training_lowers_it():
    t = charlm()
    x, y = (d[:64] for d in t.train_dataset.tensors)
    loss = float(t.loss_fn(t.model, (x, y)).detach())
    # small output weights: predictions near uniform over 256 bytes, cross-entropy ≈ ln 256 = 5.545
    assert abs(loss - math.log(256)) < 0.1
    opt = t.make_optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    for _ in range(20):
        opt.zero_grad()
        t.loss_fn(t.model, (x, y)).backward()
        opt.step()
    assert float(t.loss_fn(t.model, (x, y)).detach()) < loss - 1.0


def assert_builds_deterministically(make) -> None:
    """Two builds of a built-in target (``make()``) have the same weights, and building leaves the global
    RNG where it was: a target seeds its own generator, so loading it never shifts the user's random stream."""
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = make(), make()
    assert torch.equal(torch.random.get_rng_state(), state)
    pairs = list(zip(a.model.parameters(), b.model.parameters()))
    assert pairs and all(torch.equal(p, q) for p, q in pairs)


def test_building_is_deterministic_and_leaves_the_rng_alone():
    assert_builds_deterministically(charlm)


def test_the_recipe_is_one_epoch_per_step_warmup_and_cosine():
    t = charlm()
    m = t.metadata
    assert m["epochs"] == 1 and m["schedule_unit"] == "step" and m["seq_len"] == CHARLM_SEQ_LEN
    steps = -(-t.dataset_size // t.batch_size)
    assert f"T_max={steps - round(0.08 * steps)}" in m["schedule"] and "LinearLR" in m["schedule"]


def test_it_trains_the_usual_language_model_recipe():
    """AdamW betas (0.9, 0.95) and clipping at 1.0 (GPT-3, Chinchilla, OLMo, nanoGPT), and validate's plan keeps
    β2 = 0.95: the plan's momentum is β1 only."""
    from bsadvisor.runtime.recipe import options_for_target
    from bsadvisor.targets.target import check_target

    t = check_target(charlm())
    assert (t.optimizer, t.max_grad_norm, t.precision) == ("adamw", 1.0, "32")
    assert t.make_optimizer().param_groups[0]["betas"] == (0.9, 0.95)
    assert options_for_target(t).options["momentum"] == 0.9
    assert t.recipe()["optimizer_kwargs"] == {"betas": [0.9, 0.95]}
