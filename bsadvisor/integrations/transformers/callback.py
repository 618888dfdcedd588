"""The Hugging Face Trainer follows a plan: the ``HFFollowPlan`` callback.

The user's whole change is two lines::

    sched = BatchSizeScheduler(plan, opt)
    Trainer(..., optimizers=(opt, sched), callbacks=[HFFollowPlan(sched)])

The Trainer keeps its own data loader, sampler and micro-batch (``per_device_train_batch_size``);
the plan's batch B of an update is k micro-batches on each of the w processes,
k = B / (per-device batch × w), and HFFollowPlan sets ``args.gradient_accumulation_steps`` to the
next update's k after every optimizer step (and at each epoch start). ``BatchSizeScheduler``, as
the Trainer's LR scheduler, sets the plan's LR and momentum after each step
(runtime/scheduler.py), so every update trains on exactly the plan's examples at the plan's LR.

Why a check at ``on_train_begin`` and not a rescue later: the Trainer's inner loop
(transformers 5.25, ``Trainer._run_epoch``) decides where an optimizer step falls from the
micro-batch index of the epoch, ``(step + 1) % gradient_accumulation_steps == 0``, counts an
epoch's update iterations once, from the accumulation it had when training started, and takes the
epoch's last group with the count it had at the epoch's start. A change of k is therefore clean
only where the epoch's micro-batches so far are a multiple of the new k. ``trainer_updates``
replays that loop with HFFollowPlan's settings and the plan's updates are compared with it,
update by update, before the first step: anything the Trainer would not train exactly (a
mid-group step, an epoch cut short, a resume the Trainer would place elsewhere) is refused in one
line naming the fix, as are the settings that take the batch out of the Trainer's loop
(DeepSpeed, an IterableDataset, a per-device batch that does not divide the plan's, ``max_steps``
or ``num_train_epochs`` other than the plan's).

Written against transformers 5.25 (its loop internals above): a HFFollowPlan made with another
release is refused (``check_transformers_version``), and the ``transformers`` extra pins the same.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import transformers
from torch.utils.data import IterableDataset
from transformers import TrainerCallback

from bsadvisor.core.errors import UserError
from bsadvisor.core.original import check_dataset_size
from bsadvisor.core.plan import Plan
from bsadvisor.integrations.releases import check_release, installed_version, requirement
from bsadvisor.runtime.scheduler import BatchSizeScheduler

#: The transformers releases HFFollowPlan is tested with (major, minor): its inner loop's rules are theirs.
TESTED_TRANSFORMERS = (5, 25)
TRANSFORMERS_REQUIREMENT = requirement("transformers", TESTED_TRANSFORMERS)


def check_transformers_version(version: Optional[str] = None) -> None:
    """A UserError unless the installed transformers (or ``version``) is a release HFFollowPlan is tested with."""
    if version is None:
        version = installed_version(transformers, "transformers", f"pip install '{TRANSFORMERS_REQUIREMENT}'")
    check_release(version, TESTED_TRANSFORMERS, f"HFFollowPlan is tested with transformers {TESTED_TRANSFORMERS[0]}."
                  f"{TESTED_TRANSFORMERS[1]}.x and relies on its Trainer's accumulation rules, but transformers "
                  f"{version} is installed: pip install '{TRANSFORMERS_REQUIREMENT}'")


def plan_updates(plan: Plan) -> list[tuple[int, int, int]]:
    """(epoch, start sample, examples) of every update of the plan (the one rule: Plan.update_end)."""
    out, s, n = [], 0, plan.dataset_size
    while s < plan.total_samples:
        end = plan.update_end(s)
        out.append((s // n, s, end - s))
        s = end
    return out


def trainer_updates(micro_per_epoch: int, iterations: int, epochs: int, ks: list[list[int]],
                    first_epoch: int = 0, skipped: int = 0, gas_at_start: int = 1) -> list[list[int]]:
    """The micro-batches of each optimizer step of transformers 5.25's ``Trainer._run_epoch``, per epoch, when
    the accumulation is set to the next update's k (``ks[e][j]``: epoch e's j-th update) at each epoch
    start and after each step.

    A replay of the Trainer's loop (independent of the plan's arithmetic): ``iterations`` update
    iterations an epoch (counted once, from the accumulation at the start), each fetching
    ``gradient_accumulation_steps`` micro-batches (the last iteration: the epoch's remainder
    modulo the accumulation at the epoch's start), a step wherever ``(step + 1) %
    accumulation == 0`` or the epoch's micro-batches end. A resume (``first_epoch``,
    ``skipped`` micro-batches) starts as the Trainer's does: ``skipped // accumulation``
    iterations done, the accumulation being the one at the resume (``gas_at_start``) until the
    epoch-start setting.
    """
    out = []
    for e in range(first_epoch, epochs):
        queue = list(ks[e]) if e < len(ks) else []
        if e == first_epoch and skipped:
            queue = queue[_updates_in(queue, skipped):]
        gas = queue[0] if queue else gas_at_start  # on_epoch_begin
        remainder = micro_per_epoch % gas or gas
        step = -1
        first_iteration = 0
        if e == first_epoch and skipped:
            step, first_iteration = skipped - 1, skipped // gas
        steps, count = [], 0
        for it in range(first_iteration, iterations):
            fetch = gas if it != iterations - 1 else remainder
            take = min(fetch, micro_per_epoch - (step + 1))
            for _ in range(take):
                step += 1
                count += 1
                if (step + 1) % gas == 0 or step + 1 == micro_per_epoch:
                    steps.append(count)
                    count = 0
                    queue = queue[1:]
                    gas = queue[0] if queue else gas  # on_step_end
        if count:
            steps.append(count)  # micro-batches left without a step: the Trainer would carry them over
        out.append(steps)
    return out


def _micro_unit(args) -> int:
    """Examples of one micro-batch over all processes: the per-device batch × GPUs × processes."""
    return args.per_device_train_batch_size * max(1, args.n_gpu) * max(1, args.world_size)


def _updates_in(ks: list[int], micro: int) -> int:
    """How many of the updates ``ks`` (micro-batches each) the first ``micro`` micro-batches complete."""
    done = 0
    for j, k in enumerate(ks):
        done += k
        if done >= micro:
            return j + 1
    return len(ks)


class HFFollowPlan(TrainerCallback):
    """A ``transformers.TrainerCallback`` that makes ``Trainer.train`` follow a bsadvisor plan.

    ``scheduler`` is the ``BatchSizeScheduler(plan, optimizer)`` also passed as the Trainer's
    LR scheduler (``optimizers=(optimizer, scheduler)``): it sets the LR and momentum; this
    callback sets the accumulation so that each update takes the plan's batch, counted in examples
    over all processes. See the module docstring for what is refused and why.
    """

    def __init__(self, scheduler: BatchSizeScheduler):
        check_transformers_version()
        if not isinstance(scheduler, BatchSizeScheduler):
            raise UserError(f"HFFollowPlan needs the BatchSizeScheduler(plan, optimizer) given to the Trainer as "
                            f"optimizers=(optimizer, scheduler), got {type(scheduler).__name__}")
        if scheduler.plan.dataset_size is None:
            raise UserError("the plan has no data set size (streaming); HFFollowPlan needs one: re-run "
                            "convert-schedule with --dataset-size")
        self.scheduler, self.plan = scheduler, scheduler.plan
        self._ks: list[int] = []  # micro-batches of every update of the plan, in order
        self._given_accumulation: Optional[int] = None

    # -- the checks, before the first step ----------------------------------------------------
    def on_train_begin(self, args, state, control, train_dataloader=None, lr_scheduler=None, **kwargs):
        self._given_accumulation = args.gradient_accumulation_steps
        self._refuse_settings(args, train_dataloader, lr_scheduler)
        plan, unit = self.plan, _micro_unit(args)
        updates = plan_updates(plan)
        bad = next(((s, b) for _, s, b in updates if b % unit), None)
        if bad is not None:
            raise UserError(f"the plan's update at sample {bad[0]:,} takes {bad[1]} examples, not a multiple of the "
                            f"per-device batch × processes = {unit}: convert again with --round-to {unit} (and a "
                            "--batch-size that is a multiple of it), or give a per_device_train_batch_size that "
                            "divides every batch of the plan")
        self._ks = [b // unit for _, _, b in updates]
        micro = len(train_dataloader)
        iterations = math.ceil(micro / self._given_accumulation)  # the Trainer's updates an epoch
        self._refuse_length(args, len(updates), iterations)
        per_epoch: list[list[int]] = [[] for _ in range(plan.full_epochs)]
        for (e, _, _), k in zip(updates, self._ks):
            per_epoch[e].append(k)
        done = state.global_step
        first_epoch = skipped = 0
        if done:  # a resume: where the Trainer will start (_init_training_state), and where the plan is
            first_epoch = done // iterations
            skipped = 0 if args.ignore_data_skip else (done % iterations) * self._given_accumulation
            planned = (updates[done][0], updates[done][1] - updates[done][0] * plan.dataset_size) \
                if done < len(updates) else (plan.full_epochs, 0)
            if (first_epoch, skipped * unit) != planned:
                raise UserError(f"HFFollowPlan cannot resume this checkpoint exactly: after {done} updates the plan is "
                                f"at epoch {planned[0]}, example {planned[1]:,} of it, but the Trainer would restart "
                                f"at epoch {first_epoch}, micro-batch {skipped} (it counts a fixed accumulation); "
                                "resume from a checkpoint where these agree (before the first growth, or "
                                "save_strategy='epoch' for a plan with one update count per epoch), or start again")
        got = trainer_updates(micro, iterations, plan.full_epochs, per_epoch, first_epoch, skipped,
                              self._given_accumulation)
        want = [per_epoch[e][_updates_in(per_epoch[e], skipped) if e == first_epoch and skipped else 0:]
                for e in range(first_epoch, plan.full_epochs)]
        for e, (a, b) in enumerate(zip(got, want), start=first_epoch):
            if e == plan.full_epochs - 1:
                a = a[:len(b)]  # a plan that ends inside its last epoch: the Trainer is stopped at its end
            if a != b:
                j = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                raise UserError(f"the Trainer cannot follow this plan exactly: in epoch {e}, update {j} of the "
                                f"epoch would take {a[j] if j < len(a) else 0} micro-batches and the plan asks "
                                f"{b[j] if j < len(b) else 0} (it changes the accumulation where the epoch's "
                                f"micro-batches so far are no multiple of the new one); convert again with "
                                f"--round-to {unit} and growth factors that divide (--growth-factor 2), "
                                "or train with bsadvisor's own loop (docs/integration.md)")
        state.max_steps = len(updates)  # the progress bar's total; the Trainer stops there
        if done < len(updates):
            self.scheduler.seek(updates[done][1])
            args.gradient_accumulation_steps = self._ks[done]

    def _refuse_length(self, args, updates: int, iterations: int) -> None:
        """A UserError for a run length other than the plan's (``iterations``: the Trainer's updates an epoch)."""
        plan, steps = self.plan, args.max_steps if args.max_steps is not None and args.max_steps > 0 else None
        if steps is not None and steps != updates:
            raise UserError(f"TrainingArguments(max_steps={steps}) but the plan takes {updates} updates: leave "
                            f"max_steps out (-1) and give num_train_epochs={plan.full_epochs}")
        if steps is not None and math.ceil(steps / iterations) < plan.full_epochs:
            raise UserError(f"TrainingArguments(max_steps={steps}) makes the Trainer stop after "
                            f"{math.ceil(steps / iterations)} epochs (it counts a fixed accumulation) and the plan "
                            f"trains {plan.full_epochs}: leave max_steps out (-1) and give "
                            f"num_train_epochs={plan.full_epochs}")
        if steps is None and math.ceil(args.num_train_epochs) != plan.full_epochs:
            raise UserError(f"TrainingArguments(num_train_epochs={args.num_train_epochs:g}) but the plan trains "
                            f"{plan.epochs} epochs: give num_train_epochs={plan.full_epochs}")

    def _refuse_settings(self, args, loader, lr_scheduler) -> None:
        """A UserError for a setting that takes the batch, or the LR, out of the plan's hands."""
        if getattr(args, "deepspeed", None) or getattr(args, "hf_deepspeed_config", None) is not None \
                or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
            raise UserError("HFFollowPlan does not follow a plan under DeepSpeed (its engine fixes the batch when it "
                            "is built); drop the deepspeed config, or follow docs/integration.md (DeepSpeed)")
        if getattr(args, "auto_find_batch_size", False):
            raise UserError("HFFollowPlan follows the plan's batches with the per-device batch given; drop "
                            "TrainingArguments(auto_find_batch_size=True) and give a per_device_train_batch_size "
                            "that fits")
        if lr_scheduler is not self.scheduler:
            raise UserError("the Trainer's LR scheduler is not HFFollowPlan's BatchSizeScheduler: give "
                            "Trainer(..., optimizers=(optimizer, scheduler), callbacks=[HFFollowPlan(scheduler)])")
        dataset = getattr(loader, "dataset", None)
        if loader is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            raise UserError("HFFollowPlan needs a map-style train_dataset (len and [i]), not an IterableDataset: "
                            "the plan counts epochs")
        check_dataset_size(self.plan, len(dataset))
        unit = _micro_unit(args)
        if len(dataset) % unit:
            raise UserError(f"the train_dataset's {len(dataset)} examples are not a multiple of the per-device batch "
                            f"× processes = {unit}, so the epoch's last micro-batches would be uneven: give a "
                            "per_device_train_batch_size that divides it")

    # -- following ------------------------------------------------------------------------------
    def on_epoch_begin(self, args, state, control, **kwargs):
        if state.global_step < len(self._ks):
            args.gradient_accumulation_steps = self._ks[state.global_step]

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < len(self._ks):
            args.gradient_accumulation_steps = self._ks[state.global_step]
        else:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if self._given_accumulation is not None:  # the TrainingArguments as they were given
            args.gradient_accumulation_steps = self._given_accumulation


__all__ = ["HFFollowPlan", "check_transformers_version"]
