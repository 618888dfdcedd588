"""The options' default values, allowed names and limits, written once, in a module that imports nothing.

ConvertOptions, ProbeOptions and ValidateOptions take their field defaults from here (each option
is declared once, on its class: core.declared), and so do the modules that need a default or a
limit without building an option class or the temperature model.
"""

RULES = ("exact", "proportional")
ADAM_RULES = ("sqrt", "linear", "noise", "seesaw")
SGD_FAMILY = ("sgd", "nesterov")
ADAM_FAMILY = ("adam", "adamw")
OPTIMIZERS = SGD_FAMILY + ADAM_FAMILY
#: How the recorded schedule counts: scheduler.step() once an epoch, or once an iteration.
SCHEDULE_UNITS = ("epoch", "step")

#: Adam's β1 when no momentum is given (torch.optim.Adam/AdamW's default): a plan's momentum is β1 for Adam.
ADAM_BETA1 = 0.9

#: ConvertOptions' defaults for the options that have one (the others default to None).
DEFAULTS = {
    "momentum": 0.0,
    "schedule_unit": "epoch",
    "optimizer": "sgd",
    "rule": "exact",
    "max_fraction": 0.1,
    "round_to": 1,
    "world_size": 1,
    # Adam's rule: the one accepted (paired verdict) on every model of benchmarks/adam_rules.py, with the most
    # fewer updates (docs/results.md): 1.55-1.58x on charlm, wordlm and mixer1d; sqrt was rejected on all three.
    "adam_rule": "linear",
}

#: Adam and AdamW grow the batch to at most this × B0 by default, the LR decaying for the rest (the paper's
#: hybrid), so the plan's LR is never more than this × the original's at the same sample. Chosen from
#: docs/results.md ("Growth to 2 × B0 for Adam"): the full conversion lost about 0.012 at a tuned LR on both
#: AdamW language models; growth to 2 × B0 was accepted at every recipe's LR and lost less at a tuned one, though it
#: was rejected there on two of the eight models measured.
ADAM_MAX_GROWTH = 2.0

#: The staircase's ratio for Adam and AdamW under that growth limit (a schedule read per step): a new batch when
#: the target has grown by 5 % (1.25 otherwise). Chosen from docs/results.md ("A finer staircase to 2 × B0"): on
#: the seven AdamW models then measured it did as well as ratio 1.25 or better at the recipe's LR and saves
#: 1.41-1.43× the updates instead of 1.36-1.38×; at a tuned LR as well or better on four of five, worse on the
#: sorter. Of two models written afterwards, 1.25 was rejected on one at the recipe's LR where 1.05 was accepted.
ADAM_STAGE_FACTOR = 1.05

#: ProbeOptions' defaults for the options that have one (the others default to None: the target's
#: batch, LR and a warmup of about 2% of an epoch; no memory limit of our own; the budget decides the draws).
PROBE_DEFAULTS = {
    "device": "auto",
    "budget_seconds": 12.0,
    "target_rel_ci": 0.10,
    "estimator": "microbatch",
    "micro_batches": 8,
    "seed": 0,
    "min_draws": 10,
    "measure_memory": True,
    "measure_throughput": True,
}

#: ValidateOptions' defaults for the options that have one (the others default to None: the hybrid's cap a
#: quarter of the plan's largest batch, the margin 0.005, no accumulation, checkpoints every quarter epoch,
#: no --out, no time limit).
VALIDATE_DEFAULTS = {
    "seeds": 1,
    "variants": False,
    "increase_lr": 5.0,
    "evals": 10,
    "noise_monitor": True,
    # the noise monitor's time budget, a fraction of the training time
    "monitor_overhead": 0.05,
    # fewest noise-trace points a run records, also when the overhead budget is short (one-epoch runs)
    "monitor_min_points": 5,
    "resume": False,
    "overwrite": False,
}

#: The multiple of B_noise(s) that --noise-cap is usually given (a cap only when asked for: by default the noise
#: scale caps nothing, docs/concepts.md §9; on the benchmark models neither the probe's point nor a trace
#: predicted whether a plan held, docs/results.md).
NOISE_CAP = 4.0

#: A noise-scale interval's kind: two-sided; only a lower bound (|G|² not significantly
#: positive); no information at all (core.noise.ratio_interval).
CI_KINDS = ("bounded", "lower-bound", "unbounded")

#: Longest plan, in epochs: a plan's users may walk it epoch by epoch (the sampler, CSV export).
MAX_EPOCHS = 1_000_000
#: Longest plan in samples (2**62: sums of sample positions stay exact integers).
MAX_SAMPLES = 2**62
#: A CSV schedule table (and the table a plan records as its schedule) is at most this large.
MAX_TABLE_BYTES = 16 * 2**20
#: Longest --schedule expression accepted; longer schedules belong in a CSV table.
MAX_SCHEDULE_CHARS = 10_000
#: How a schedule counts: scheduler.step() once an epoch, or once an iteration.
SCHEDULE_UNITS = ("epoch", "step")
