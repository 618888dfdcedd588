"""Which Adam rule holds? Every rule of docs/concepts.md §7, paired seeds, on four AdamW models (issues 20, 28).

Models (each trained with its own recipe from ``metadata``: per-step LinearLR warmup + cosine):

- ``charlm``  : causal byte-level transformer on standard-library source, 1 epoch (single pass)
- ``wordlm``  : word-level GRU LM on pydoc's topic texts, 2 epochs
- ``mixer1d`` : MLP-Mixer on MNIST-1D, 2 epochs (held-out accuracy)
- ``sorter``  : causal transformer sorting 12 numbers in 0..31, 1 epoch (where linear loses)

Configs (``RULE[+sde][+capK][+bK][+sfX][+xKlr][@trace][*K]``):

- ``sqrt``, ``linear``, ``seesaw``, ``noise``: the Adam rule (``adam_rule``), no noise cap;
- ``+cap`` / ``+cap2``: the noise cap at 4 (the default) / 2 × B_noise(s);
- ``+sde``: Malladi's companion scaling of β1, β2 and ε (``adam_sde``);
- the noise model (for ``noise`` and ``+cap``): by default the probe's one point (what ``bsadvisor advise``
  has: ``bsadvisor.measure.probe.probe(target)``, scaled through training by eq. 16); ``@trace`` instead
  uses the B_simple trace the NoiseMonitor recorded on the original run of seed 0 with validate's settings
  (what ``--noise-trace results.json`` gives).
- ``sde-only``: the control of ``+sde``: the original's batch and LR with the β1, β2 and ε of
  ``linear+sde``'s plan at the same samples (what the companion scaling does without growth).
- a larger start (docs/results.md "A noise-bounded start"): ``+xKlr`` the §5.2 plan of
  ``increase_lr=K`` (batch and LR × K from the first update, the warmup kept at K·B0, the decay converted from
  there), ``+xKsqrt`` its batches with the LR × √K (Merrill et al.'s √2 per doubling), ``+sKlr`` / ``+sKsqrt``
  the batch K·B0 only where the plan's is below it (LR × K·B0/B or × √(K·B0/B)); ``original*K`` their control,
  the original at B0 with its LR × K. ``--reference original*K`` takes every verdict against that control.
- a growth limit (docs/results.md "Growth to 2 × B0 for Adam"): ``+bK`` is ``--max-growth K``, the batch at most
  K·B0 (the hybrid: the LR carries the rest) with the staircase of ratio 1.25 its cached runs trained, ``+sfX``
  the staircase's stage factor X instead (AdamW's default is ``linear+b2+sf1.05``), ``+tF`` the last fraction
  F of the samples at the original's LR (the batch kept). Every other config is its rule's full conversion
  (``max_growth=0``), as every cached run was.

Every plan is made by the library (``options_for_target`` and ``recommend``, as the CLI makes it) and trained by
``train_plan`` from the target's initial weights; seed s fixes the data order of both the
original (the recipe at B0) and the plan, and the paired verdict (core/verdict.py, δ = 0.005,
90 % t interval) compares them. Every run's final metric, updates and wall time are cached in
benchmarks/results/adam_rules.json by (model, config, seed): a second call resumes, and a larger
``--seeds`` adds seeds. The original runs are shared by every config of a model.

    python benchmarks/adam_rules.py [--models charlm,wordlm,mixer1d] [--configs linear,noise+cap] [--seeds 3]
    python benchmarks/adam_rules.py --table-only      # print the table of what is cached

The recipe: every model trains AdamW with β2 = 0.999 and no clipping here (the rows of
benchmarks/results/adam_rules.json; builtin:charlm's own recipe is now β2 0.95 with clipping 1.0, and
is set back for them). ``--beta2 0.95`` (and ``--clip 1.0``) train every model with that β2 (and
clipping) instead, cached apart in adam_rules@<variant>.json, and the script then says, config by
config, whether the verdict changes from the β2 = 0.999 table:

    python benchmarks/adam_rules.py --models charlm,mixer1d --configs linear,sqrt --beta2 0.95
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bsadvisor.core.fileio import write_atomic  # noqa: E402
from bsadvisor.core.noise_model import NoiseModel, NoisePoint  # noqa: E402
from bsadvisor.core.verdict import paired_verdict  # noqa: E402
from bsadvisor.runtime.recipe import options_for_target  # noqa: E402

MODELS = ("charlm", "wordlm", "mixer1d", "sorter")
#: The order they are run in (the configurations the defaults rest on first), then the rest.
CONFIGS = ("linear", "linear+cap", "noise+cap", "noise", "sqrt", "seesaw", "linear+sde",
           "sqrt+cap", "seesaw+cap", "linear+sde+cap")
#: The same with the noise model of the original's measured trace (the caps at 4 and 2 × B_noise(s)).
TRACE_CONFIGS = ("linear+cap@trace", "linear+cap2@trace", "noise@trace", "noise+cap@trace", "noise+cap2@trace",
                 "sqrt+cap@trace")
RULES = ("sqrt", "linear", "seesaw", "noise")
CACHE = Path(__file__).resolve().parent / "results" / "adam_rules.json"
#: validate's monitor settings (bsadvisor/cli/validate.py: 5 % overhead, at least 5 points).
MONITOR = {"overhead": 0.05, "min_points": 5}
ORIGINAL = "original"
#: The control of the companion scaling: B0 and the original's LR, with linear+sde's β1, β2 and ε (sde_only_plan).
SDE_ONLY = "sde-only"
#: The control of a larger start: the original (batch B0) with its LR × K at every update (``original*2``).
LR_ONLY = re.compile(r"original\*(\d+(?:\.\d+)?)")
#: Any config with its LR × K at every update (``linear*4``): a plan made from the recipe at K× its LR (the linear
#: rule's batches do not depend on the LR), to compare against ``original*K`` (``--reference``) where K tunes it.
TIMES = re.compile(r"(.+)\*(\d+(?:\.\d+)?)")


def is_control(config: str) -> bool:
    """A control config (no rule to parse): ``sde-only`` or ``original*K``."""
    return config == SDE_ONLY or LR_ONLY.fullmatch(config) is not None


#: The recipe of the cached table: AdamW's β2 and clipping every model trains with unless --beta2/--clip say.
BASE_BETA2, BASE_CLIP = 0.999, None


# -- the recipe variant ---------------------------------------------------------------------------------
def variant(beta2: float, clip) -> str:
    """``""`` for the cached table's recipe (β2 0.999, no clipping), else ``b2=0.95`` / ``b2=0.95,clip=1``."""
    if beta2 == BASE_BETA2 and clip == BASE_CLIP:
        return ""
    return f"b2={beta2:g}" + (f",clip={clip:g}" if clip is not None else "")


def cache_path(tag: str) -> Path:
    return CACHE if not tag else CACHE.with_name(f"adam_rules@{tag}.json")


#: A model at K× its recipe's LR (``charlm-lr4``): the recipe re-tuned (the ``original*K`` controls found every
#: recipe's LR too low), so each config, its noise trace included, is measured at the tuned LR.
TUNED = re.compile(r"(.+)-lr(\d+(?:\.\d+)?)")


def build_target(name: str, beta2: float = BASE_BETA2, clip=BASE_CLIP):
    """builtin:NAME trained with AdamW betas (β1, ``beta2``) and ``clip`` (None: no clipping), its β1 its own;
    NAME-lrK: at K× the recipe's LR."""
    from bsadvisor.targets.loading import load_target

    tuned = TUNED.fullmatch(name)
    target = load_target(f"builtin:{tuned.group(1) if tuned else name}")
    if tuned:
        target.lr *= float(tuned.group(2))
    target.optimizer_kwargs = {**target.optimizer_kwargs, "betas": (target.beta1, beta2)}
    target.max_grad_norm = clip
    return target


# -- the cache ---------------------------------------------------------------------------------------------
def load_cache(where: "str | Path" = "", schema: str = "bsadvisor.adam_rules/1") -> dict:
    """The cached runs: ``where`` a recipe variant's tag (``variant``) or a cache file's path."""
    path = where if isinstance(where, Path) else cache_path(where)
    if path.is_file():
        return json.loads(path.read_text())
    return {"schema": schema, "runs": {}, "noise": {}, **({} if isinstance(where, Path) else {"variant": where})}


def save_cache(cache: dict, path: "Path | None" = None) -> None:
    """Write ``cache``, its runs merged over the file's: two processes (one per core) may add runs at once, so
    the read, the merge and the write hold a lock (without it a run one process saved between the other's read
    and write was lost)."""
    import fcntl

    path = path if path is not None else cache_path(cache.get("variant", ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            on_disk = json.loads(path.read_text())
            cache["runs"] = {**on_disk.get("runs", {}), **cache["runs"]}
            for model, noise in on_disk.get("noise", {}).items():  # in place: callers hold these dicts
                mine = cache["noise"].setdefault(model, {})
                for k, v in noise.items():
                    mine.setdefault(k, v)
        write_atomic(path, (json.dumps(cache, indent=1, sort_keys=True) + "\n").encode())


def key(model: str, config: str, seed: int) -> str:
    return f"{model}|{config}|{seed}"


# -- configs -----------------------------------------------------------------------------------------------
#: A larger start: ``+xKlr`` batch and LR × K (§5.2, ``increase_lr``: the whole converted plan from a
#: K× start), ``+xKsqrt`` the same batches with the LR × √K; ``+sKlr`` / ``+sKsqrt`` only where the plan's batch is
#: below K·B0: the batch K·B0 there with the LR × (K·B0/B) / × √(K·B0/B), the rest of the plan unchanged.
#: The staircase ratio of a schedule read per step before AdamW's finer default under its growth limit: what
#: every cached ``+bK`` run without ``+sfX`` trained.
STAIRCASE_RATIO = 1.25
START = re.compile(r"([xs])(\d+(?:\.\d+)?)(lr|sqrt)")


def parse_config(config: str) -> dict:
    """``linear+sde+cap2@trace`` → {rule, sde, cap (0: none), source ('probe' or 'trace'), start (K, LR rule)}."""
    times = TIMES.fullmatch(config)
    body, _, source = (times.group(1) if times else config).partition("@")
    rule, *flags = body.split("+")
    if rule not in RULES or source not in ("", "probe", "trace"):
        raise SystemExit(f"unknown config {config!r}: RULE[+sde][+capK][+bK][+sfX][+xK(lr|sqrt)][@trace], RULE in "
                         f"{', '.join(RULES)}")
    out = {"rule": rule, "sde": False, "cap": 0.0, "source": source or "probe", "start": None, "batch_cap": None,
           "stage_factor": None, "tail": None}
    for flag in flags:
        if flag == "sde":
            out["sde"] = True
        elif flag.startswith("cap"):
            out["cap"] = float(flag[3:] or 4)
        elif re.fullmatch(r"t\d+(?:\.\d+)?", flag):  # the last fraction F of the run at the original's LR
            out["tail"] = float(flag[1:])
        elif re.fullmatch(r"sf\d+(?:\.\d+)?", flag):  # the staircase's stage factor (1: follow the target)
            out["stage_factor"] = float(flag[2:])
        elif re.fullmatch(r"b\d+(?:\.\d+)?", flag):  # --max-growth K: the batch at most K·B0, the LR the rest
            out["batch_cap"] = float(flag[1:])
        elif START.fullmatch(flag):
            how, k, lr_rule = START.fullmatch(flag).groups()
            out["start"] = (how, float(k), lr_rule)
        else:
            raise SystemExit(f"unknown flag {flag!r} in config {config!r}")
    return out


def make_plan(target, config: str, noise: dict):
    """The plan of ``config``, made by the library as the CLI makes it."""
    from bsadvisor.core.baseline import baseline_plan
    from bsadvisor.core.recommend import recommend

    if config == ORIGINAL:
        return baseline_plan(**options_for_target(target).options)
    if config == SDE_ONLY:
        return sde_only_plan(target, noise)
    if TIMES.fullmatch(config):  # original*K, linear*K, ...
        base, k = TIMES.fullmatch(config).groups()
        return lr_times(make_plan(target, base, noise), float(k))
    c = parse_config(config)
    model = None
    if c["rule"] == "noise" or c["cap"]:
        model = noise_model(noise, c["source"])
        if model is None:
            raise RuntimeError(f"{config}: no usable {c['source']} noise model")
    how, k, lr_rule = c["start"] or ("", None, "lr")
    # without +bK, max_growth 0: each rule's full conversion, what the cached runs of every plain config trained;
    # +bK is the library's own --max-growth K, and without +sfX it keeps the staircase of ratio 1.25 its cached runs
    # trained (AdamW's default, growth to 2 × B0 in steps of 1.05, is ``+b2+sf1.05``)
    stage_factor = c["stage_factor"] or (STAIRCASE_RATIO if c["batch_cap"] else None)
    plan = recommend(options_for_target(target).options, max_growth=c["batch_cap"] or 0, adam_rule=c["rule"],
                     adam_sde=c["sde"], noise_trace=model, noise_cap=c["cap"], increase_lr=k if how == "x" else None,
                     **({"stage_factor": stage_factor} if stage_factor else {}))
    if c["tail"]:
        plan = anneal_tail(plan, c["tail"])
    if how == "s":
        return start_at(plan, round(k * target.batch_size), 1.0 if lr_rule == "lr" else 0.5)
    return plan if lr_rule == "lr" else lr_times(plan, k ** -0.5)


def lr_times(plan, factor: float):
    """``plan`` with every stage's LR × ``factor`` (its batches and updates unchanged): the §5.2 plan of
    ``increase_lr=K`` (batch and LR × K) × 1/√K is the batch × K with the LR × √K (Merrill et al.'s batch warmup,
    LR × √2 per doubling), the decay converted from there as before."""
    from dataclasses import replace

    return replace(plan, stages=[replace(st, lr=st.lr * factor,
                                         lr_scale=None if st.lr_scale is None else st.lr_scale * factor)
                                 for st in plan.stages])


def anneal_tail(plan, fraction: float):
    """``plan`` with its last ``fraction`` of the samples at the original's LR (its batch kept, so a lower
    temperature there): the LR's final annealing as the original has it. The cut falls on an update of the
    stage it is in."""
    from dataclasses import replace

    cut = plan.total_samples - fraction * plan.total_samples
    stages = []
    for st in plan.stages:
        if st.end_sample <= cut or st.lr_scale is None:
            stages.append(st)
            continue
        at = max(st.start_sample, st.start_sample + math.ceil((cut - st.start_sample) / st.batch_size) * st.batch_size)
        if at >= st.end_sample:
            stages.append(st)
            continue
        if at > st.start_sample:
            stages.append(replace(st, end_sample=at))
        stages.append(replace(st, start_sample=at, lr_scale=1.0, lr=plan.original.lr_at(at), phase="original"))
    return replace(plan, stages=stages)


def start_at(plan, batch: int, power: float):
    """``plan`` with every stage whose batch B is below ``batch`` trained at ``batch`` and the LR × (batch/B)^power
    (1: the temperature kept under the linear rule; 0.5: LR × √2 per doubling), the later stages unchanged."""
    from dataclasses import replace

    def up(st):
        f = (batch / st.batch_size) ** power
        return replace(st, batch_size=batch, lr=st.lr * f, lr_scale=None if st.lr_scale is None else st.lr_scale * f)

    return replace(plan, stages=[up(st) if st.batch_size < batch else st for st in plan.stages])


def sde_only_plan(target, noise: dict):
    """The control of ``+sde``: the original's batch B0 and LR at every update, with the β1, β2 and ε that
    ``linear+sde``'s plan trains with at the same sample (its stages, at B0 and the original's LR). What the
    companion scaling does by itself, without the batch growth."""
    from dataclasses import replace

    base, sde = make_plan(target, ORIGINAL, noise), make_plan(target, "linear+sde", noise)
    b0 = target.batch_size
    stages = [replace(st, batch_size=b0, lr_scale=1.0, lr=base.at_sample(st.start_sample).lr, phase="original")
              for st in sde.stages]
    return replace(sde, stages=stages)


def noise_model(noise: dict, source: str):
    """The cached probe point or monitor trace of a model as a NoiseModel (None when not usable)."""
    if source == "trace":
        rows = noise.get("trace")
        return NoiseModel.from_trace(rows, "the original's trace") if rows else None
    p = noise.get("probe")
    if not p:
        return None
    point = NoisePoint(0, p["b_simple"], p["lr"], p["momentum"], p["batch_size"],
                       (p["ci90"][0], float("inf") if p["ci90"][1] is None else p["ci90"][1]), p["ci_kind"])
    return NoiseModel((point,), "probe") if point.usable else None


# -- measuring ---------------------------------------------------------------------------------------------
def measure_probe(name: str, target) -> dict:
    """The probe's noise point (bsadvisor.measure.probe, its default budget; memory and throughput skipped:
    they do not enter the noise model)."""
    from bsadvisor.measure.probe import probe

    started = time.perf_counter()
    r = probe(target, measure_memory=False, measure_throughput=False, seed=0)
    n, s = r.noise, r.settings
    out = {"b_simple": n.b_simple, "ci90": [n.ci90[0], None if n.ci90[1] == float("inf") else n.ci90[1]],
           "ci_kind": n.ci_kind, "lr": s.lr, "momentum": s.momentum, "batch_size": s.batch_size,
           "seconds": time.perf_counter() - started}
    print(f"  {name}: probe B_simple {n.b_simple:.3g} [{n.ci90[0]:.3g}, {n.ci90[1]:.3g}] ({n.ci_kind}), "
          f"{out['seconds']:.0f} s", flush=True)
    return out


def same_training(plan, original) -> bool:
    """Whether ``plan`` trains exactly as ``original`` (any earlier plan): the same batch, LR, momentum and
    optimizer factors at every update (a cap that binds at B0 gives the original back; a cap that never binds
    gives the uncapped plan). Its runs are then that plan's runs (training is deterministic on CPU, bit for
    bit), copied instead of trained again."""
    if plan.updates != original.updates or plan.total_samples != original.total_samples:
        return False
    sample = 0
    while sample < original.total_samples:
        a, b = plan.at_sample(sample), original.at_sample(sample)
        if a != b:  # batch, LR, β1 and the companion factors on 1−β2 and ε
            return False
        sample += b.batch_size
    return True


def lr_sum(plan) -> float:
    """Σ of the LR over the plan's updates (each update at its first sample; a diagnostic: for Adam, whose
    step per coordinate is about the LR when the signal dominates, it is the total drift the run allows)."""
    total, sample = 0.0, 0
    while sample < plan.total_samples:
        setting = plan.at_sample(sample)
        total += setting.lr
        sample += setting.batch_size
    return total


def train_one(target, init, plan, seed: int, monitor: bool) -> tuple[dict, list]:
    from bsadvisor.runtime.train import train_plan

    r = train_plan(target, plan, seed=seed, init_state=init, noise_monitor=dict(MONITOR) if monitor else None)
    f = r.final
    row = {"metric": f["metric"], "train_loss": f["train_loss"], "updates": f["updates"], "wall_s": f["wall_s"],
           "batches": plan.stage_batch_sizes()}
    return row, [p.to_dict() for p in r.noise_trace]


def run_model(name: str, configs: list[str], seeds: int, cache: dict, beta2: float = BASE_BETA2,
              clip=BASE_CLIP) -> None:
    """Train what the cache lacks: the original's seeds (seed 0 with the monitor: the trace), the probe if a
    config needs it, then every config's seeds; the cache is saved after every run."""
    from bsadvisor.runtime.train import initial_state

    target = build_target(name, beta2, clip)
    init = initial_state(target.model)
    noise = cache["noise"].setdefault(name, {})
    parsed = [parse_config(c) for c in configs if not is_control(c)]
    needs_probe = any(c["source"] == "probe" and (c["rule"] == "noise" or c["cap"]) for c in parsed)
    if needs_probe and "probe" not in noise:
        noise["probe"] = measure_probe(name, target)
        target.model.load_state_dict(init)
        save_cache(cache)
    built: dict = {}  # config → plan: this call's, and those of the configs already cached for this model
    for config in dict.fromkeys(k.split("|")[1] for k in cache["runs"] if k.startswith(f"{name}|")):
        if config not in configs and config != ORIGINAL:
            try:
                built[config] = make_plan(target, config, noise)
            except Exception:  # noqa: BLE001 (a config the library refuses: nothing to compare with)
                pass
    for config in [ORIGINAL] + configs:
        try:
            plan = make_plan(target, config, noise)
        except Exception as exc:  # a config the library refuses is a result too
            print(f"  {name} {config}: no plan: {exc}", flush=True)
            continue
        same = next((c for c, other in built.items() if same_training(plan, other)), None)
        built[config] = plan

        def store(k: str, row: dict) -> None:
            cache["runs"][k] = row
            save_cache(cache)

        train_seeds(name, config, plan, seeds, target, init, noise, same, cache["runs"].get, store)


def train_seeds(name: str, config: str, plan, seeds: int, target, init, noise: dict, same, lookup, store) -> None:
    """Train the seeds of ``config``'s ``plan`` that ``lookup(key)`` finds no run for, ``store(key, row)`` each
    as it ends (the original's seed 0 with the monitor: its trace goes to ``noise``). A config that trains
    exactly as ``same`` (same_training) copies that config's runs instead."""
    for seed in range(seeds):
        k = key(name, config, seed)
        cached = lookup(k)
        if cached is not None:
            if cached["updates"] != plan.updates or _distinct(cached["batches"]) != _distinct(plan.stage_batch_sizes()):
                raise SystemExit(f"{k}: the cached run trained another plan ({cached['updates']} updates, batches "
                                 f"{_batches(cached['batches'])}) than {config!r} makes now ({plan.updates}, "
                                 f"{_batches(plan.stage_batch_sizes())}): give the new plan a config name of its own")
            continue
        copied = lookup(key(name, same, seed)) if same is not None else None
        if copied is not None:
            store(k, {**copied, "same_as": same})
            print(f"  {name} {config:<16} seed {seed}: trains exactly as {same} (copied, not rerun)", flush=True)
            continue
        row, trace = train_one(target, init, plan, seed, monitor=config == ORIGINAL and seed == 0)
        if trace:
            noise["trace"] = trace
        store(k, row)
        print(f"  {name} {config:<16} seed {seed}: metric {row['metric']:.4f} updates {row['updates']} "
              f"wall {row['wall_s']:.1f}s batches {_batches(row['batches'])}", flush=True)


def _distinct(batches: list[int]) -> list[int]:
    """The batch sizes in order, a repeat of the one before left out (a copied run records the stages of the config
    it copies: the original's [32] is a capped plan's [32, 32, 32])."""
    return [b for i, b in enumerate(batches) if i == 0 or b != batches[i - 1]]


# -- the report --------------------------------------------------------------------------------------------
def _batches(bs: list[int]) -> str:
    return " → ".join(map(str, bs)) if len(bs) <= 8 else " → ".join(map(str, bs[:3] + ["…"] + bs[-3:]))


def table(cache: dict, models: list[str], configs: list[str], beta2: float = BASE_BETA2, clip=BASE_CLIP,
          limit: Optional[dict] = None, reference: str = ORIGINAL) -> list[dict]:
    """The paired verdict of every (model, config) cached against ``reference`` (the original, or a control such
    as ``original*2``); ``limit``: (model, config) → at most that many seeds."""
    rows = []
    for m in models:
        target = build_target(m, beta2, clip) if any(key(m, c, 0) in cache["runs"] for c in configs) else None
        noise = cache["noise"].get(m, {})
        for c in configs:
            ref, cand = [], []
            seed = 0
            most = (limit or {}).get((m, c), float("inf"))
            while key(m, c, seed) in cache["runs"] and key(m, reference, seed) in cache["runs"] and seed < most:
                cand.append(cache["runs"][key(m, c, seed)])
                ref.append(cache["runs"][key(m, reference, seed)])
                seed += 1
            if not cand:
                continue
            v = paired_verdict([r["metric"] for r in cand], [r["metric"] for r in ref])
            plan = make_plan(target, c, noise)
            rows.append({"model": m, "config": c, "ratio": ref[0]["updates"] / cand[0]["updates"], "verdict": v,
                         "seeds": len(cand), "wall": sum(r["wall_s"] for r in cand) / len(cand),
                         "wall_ref": sum(r["wall_s"] for r in ref) / len(ref), "batches": cand[0]["batches"],
                         "lr_sum": lr_sum(plan) / lr_sum(make_plan(target, reference, noise)), "plan": plan})
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n| model | config | updates ratio (orig/plan) | d̄ | 90% interval | verdict | seeds | wall s plan / orig "
          "| ΣLR plan/orig | batches |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["verdict"]
        iv = "n/a" if v["interval"] is None else f"[{v['interval'][0]:+.4f}, {v['interval'][1]:+.4f}]"
        more = f" (≈{v['seeds_suggested']} seeds)" if v.get("seeds_suggested") else ""
        print(f"| {r['model']} | {r['config']} | {r['ratio']:.2f}× | {v['difference']:+.4f} | {iv} | "
              f"{v['status'].upper()}{more} | {r['seeds']} | {r['wall']:.1f} / {r['wall_ref']:.1f} | "
              f"{r['lr_sum']:.3f} | {_batches(r['batches'])} |")


def print_pivot(rows: list[dict], models: list[str]) -> None:
    """The same verdicts as one row per config and one column per model (docs/results.md's table)."""
    cells = {(r["model"], r["config"]): r for r in rows}
    print("\n| config | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for c in dict.fromkeys(r["config"] for r in rows):
        out = []
        for m in models:
            r = cells.get((m, c))
            if r is None:
                out.append("—")
                continue
            v = r["verdict"]
            iv = "" if v["interval"] is None else f" [{v['interval'][0]:+.4f}, {v['interval'][1]:+.4f}]"
            out.append(f"{v['status'].upper()} {v['difference']:+.4f}{iv}, {r['ratio']:.2f}×, "
                       f"ΣLR {r['lr_sum']:.2f}, {r['seeds']} seeds")
        print(f"| {c} | " + " | ".join(out) + " |")


def noise_after_warmup(cache: dict, model: str, plan) -> Optional[dict]:
    """The first bounded point of the original's measured trace (seed 0) at or after the end of ``plan``'s
    warmup (its first stage that is not a warmup stage): B_simple there and its 90 % interval."""
    warm = next((st.start_sample for st in plan.stages if st.phase != "warmup"), 0)
    return next((p for p in cache["noise"].get(model, {}).get("trace") or []
                 if p["sample"] >= warm and p["ci_kind"] == "bounded" and p["b_simple"] > 0), None)


def print_start(rows: list[dict], cache: dict) -> None:
    """The configs that start larger (``+xK…``/``+sK…``): the verdict beside the starting batch over
    B_simple measured on the original just after its warmup (eq. 16: the start keeps the temperature with
    ``lr``, so the original's B_simple is the plan's there; with ``sqrt`` the plan's temperature is lower and
    its B_noise higher by √K)."""
    starts = [r for r in rows if not is_control(r["config"]) and parse_config(r["config"])["start"]]
    if not starts:
        return
    print("\nA larger start: the first batch over B_simple measured just after the warmup (original, seed 0)")
    print("| config | model | verdict | d̄ [90% interval] | seeds | fewer updates | ΣLR | first batch | "
          "B_simple after warmup [90%] (sample) | first batch / B_simple |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in starts:
        v, first = r["verdict"], r["batches"][0]
        iv = "n/a" if v["interval"] is None else f"[{v['interval'][0]:+.4f}, {v['interval'][1]:+.4f}]"
        p = noise_after_warmup(cache, r["model"], r["plan"])
        at = "—" if p is None else (f"{p['b_simple']:.3g} [{p['ci90'][0]:.3g}, "
                                    f"{'∞' if p['ci90'][1] is None else format(p['ci90'][1], '.3g')}] ({p['sample']:,})")
        ratio = "—" if p is None else f"{first / p['b_simple']:.2f}"
        print(f"| {r['config']} | {r['model']} | {v['status'].upper()} | {v['difference']:+.4f} {iv} | {r['seeds']} | "
              f"{r['ratio']:.2f}× | {r['lr_sum']:.2f} | {first} | {at} | {ratio} |")


def print_change(rows: list[dict], base_rows: list[dict], tag: str) -> None:
    """Config by config and model by model: the verdict with ``tag``'s recipe against the β2 = 0.999 table's
    (``base_rows``, on the same seeds), and whether it changed."""
    base = {(r["model"], r["config"]): r for r in base_rows}
    print(f"\nDoes the Adam-rule table change with {tag} (against β2 {BASE_BETA2}, no clipping)?")
    print("| model | config | β2 0.999 | " + tag + " | changed |")
    print("|---|---|---|---|---|")
    for r in rows:
        b = base.get((r["model"], r["config"]))
        if b is None:
            continue
        cells = []
        for x in (b, r):
            v = x["verdict"]
            iv = "" if v["interval"] is None else f" [{v['interval'][0]:+.4f}, {v['interval'][1]:+.4f}]"
            cells.append(f"{v['status'].upper()} {v['difference']:+.4f}{iv}, {x['ratio']:.2f}×, {x['seeds']} seeds")
        changed = "no" if b["verdict"]["status"] == r["verdict"]["status"] else "YES"
        print(f"| {r['model']} | {r['config']} | {cells[0]} | {cells[1]} | {changed} |")


def print_noise(cache: dict, models: list[str], configs: list[str], beta2: float = BASE_BETA2, clip=BASE_CLIP) -> None:
    """B_noise(s) of each noise model (the noise rule's step function, eq. 16) and each config's batch, at
    tenths of the run: where the plans' batches stand against the noise scale."""
    from bsadvisor.core.spans import temperature_model
    from bsadvisor.core.options import ConvertOptions

    print("\nB_noise(s) along the original run (eq. 16) and each plan's batch, at 0, 10, …, 100 % of the samples:")
    for m in models:
        noise = cache["noise"].get(m, {})
        if not noise:
            continue
        target = build_target(m, beta2, clip)
        recipe = options_for_target(target).options
        opts = ConvertOptions(**recipe)
        where = [min(opts.run_samples - 1, round(opts.run_samples * k / 10)) for k in range(11)]
        print(f"  {m} (B0 = {target.batch_size}, N = {target.dataset_size}, {opts.run_samples:,} samples)")
        for source in ("probe", "trace"):
            model = noise_model(noise, source)
            if model is not None:
                tm = temperature_model(ConvertOptions(**recipe, adam_rule="noise", noise_model=model))
                print(f"    B_noise ({source}){'':<10}" + " ".join(f"{tm.noise_scale_at(s):>6.3g}" for s in where))
        for c in configs:
            if not any(key(m, c, seed) in cache["runs"] for seed in range(2)):
                continue
            try:
                plan = make_plan(target, c, noise)
            except Exception:  # noqa: BLE001 (no plan: nothing to show)
                continue
            print(f"    batch {c:<20}" + " ".join(f"{plan.at_sample(s).batch_size:>6}" for s in where))
        if noise.get("trace"):
            pts = ", ".join(f"{p['sample']}: {p['b_simple']:.3g}" for p in noise["trace"] if p["ci_kind"] == "bounded")
            print(f"    raw trace (sample: B_simple at the original's LR and B0): {pts}")
        if noise.get("probe"):
            p = noise["probe"]
            print(f"    probe: B_simple {p['b_simple']:.3g} ({p['ci_kind']}) at LR {p['lr']:g}, batch {p['batch_size']}")


def main() -> int:
    ap = argparse.ArgumentParser(description="Adam rules on three AdamW models, paired seeds")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--table-only", action="store_true", help="print the table of the cached runs, train nothing")
    ap.add_argument("--reference", default=ORIGINAL, help="the config every verdict is against (default: the "
                    "original; a control such as 'original*2': the original at B0 with its LR × 2)")
    ap.add_argument("--beta2", type=float, default=BASE_BETA2, help="AdamW's β2 for every model")
    ap.add_argument("--clip", type=float, default=BASE_CLIP, help="max_grad_norm for every model (default: none)")
    args = ap.parse_args()
    tag = variant(args.beta2, args.clip)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    models = [m for m in args.models.split(",") if m]
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if not is_control(c):
            parse_config(c)
    cache = load_cache(tag)
    started = time.perf_counter()
    if not args.table_only:
        for m in models:
            run_model(m, configs, args.seeds, cache, args.beta2, args.clip)
    cached = [k.split("|")[1] for k in cache["runs"]]
    all_configs = list(dict.fromkeys(list(CONFIGS) + [c for c in TRACE_CONFIGS if c in cached] + configs + cached))
    if tag:  # only what this variant trained
        all_configs = [c for c in all_configs if c in cached]
    rows = table(cache, models, [c for c in all_configs if c not in (ORIGINAL, args.reference)], args.beta2, args.clip,
                 reference=args.reference)
    print_table(rows)
    print_pivot(rows, models)
    print_start(rows, cache)
    if tag:  # the β2 = 0.999 table on the same seeds (0 … k−1) as this variant's
        same_seeds = {(r["model"], r["config"]): r["seeds"] for r in rows}
        print_change(rows, table(load_cache(), models, [c for c in all_configs if c != ORIGINAL], limit=same_seeds),
                     tag)
    print_noise(cache, models, [c for c in all_configs if c != ORIGINAL], args.beta2, args.clip)
    print(f"\n(δ = 0.005 in the metric's units; wall: mean training seconds per run on this machine; "
          f"{time.perf_counter() - started:.0f} s this call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
