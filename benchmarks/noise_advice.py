"""What does the gradient noise scale predict about a plan's outcome?

On six models, the plan ``bsadvisor.advise`` recommends with its defaults (config ``advise``: the probe's device
cap, no noise cap) and the library's default conversion without a probe (config ``linear``: ``recommend`` with
the target's recipe, the linear Adam rule for AdamW, the exact rule for SGD) are trained against the original with the same seeds (paired verdict,
δ = 0.005, 90 % t interval), and set beside what the noise scale says about it:

- along the run: the NoiseMonitor's B_simple(s) on the original of seed 0 (validate's monitor settings), and
  the plan's batch at the same samples. The plan keeps the original's temperature, so under B_noise ∝ 1/T the
  plan's noise scale at s is the original's measured one: B/B_simple is read directly. Reported at the first
  point after the recipe's warmup ("start"), at the last bounded point in the run's second half ("late"; an
upper bound "≤" where only lower bounds of B_simple were measured there) and its maximum, and the
  growth of B_simple from the first to the last of those points;
- what ``advise`` read until now: the probe's one point near initialisation (its default warmup, 2 % of an
  epoch at the target's LR), and whether it kept the batch (B0 ≥ 4 × B_noise where the decay begins);
- what a cheap scout reads: the same probe after as many updates as the recipe's warmup (at least 2 % of
  the run), at the target's LR, with its 90 % interval.

Models: ``charlm``, ``wordlm``, ``mixer1d`` (benchmarks/adam_rules.py), ``sorter`` (AdamW, own recipe),
``mnist1d-mlp`` and ``mnist1d-cnn`` (SGD momentum 0.9, benchmarks/reproduce_smith.py's recipe: 10 epochs,
MultiStepLR at epochs 3, 6 and 8, γ = 0.2); with ``--models``, also the three AdamW models written as a new user
would (``gauss``: benchmarks/gauss_mlp.py, ``wave``: wave_cnn.py, ``tagger``: tagger_gru.py, ``fourier``:
fourier_mlp.py, ``compare``: compare_transformer.py). The Adam-rule study (``--models`` below, ``--configs
linear,sqrt,seesaw``) adds the sorter with β2 = 0.95
(``sorter-b95``), a sorter run of 3,072 updates with β2 = 0.95 (``sorter-long-b95``: six times the data) and
a mixer1d run of 3,000 updates with β2 = 0.95 (``mixer1d-long-b95``: three epochs), the optimizer overridden
here (Target has no optimizer keywords on this branch).

Every run is trained by the library (``adam_rules.train_one``: ``runtime.train.train_plan``, what
``validate`` runs, with its monitor on the original of seed 0) and cached in
benchmarks/results/noise_advice.json by (model, config, seed); runs already in adam_rules.json (the same
models, configs and seeds: training is deterministic on CPU) are read from there, not trained again.

    python benchmarks/noise_advice.py [--models charlm,sorter] [--configs linear,advise] [--seeds 3]
    python benchmarks/noise_advice.py --models sorter-b95,mixer1d-long-b95 --configs linear,sqrt,seesaw --no-scout
    python benchmarks/noise_advice.py --table-only
    python benchmarks/noise_advice.py --vhat --models charlm,sorter   # Adam's v̂ at the end, original vs plan
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import adam_rules  # noqa: E402  (its plans, its training call, its cache of the same runs)
from bsadvisor.core.verdict import paired_verdict  # noqa: E402

MODELS = ("charlm", "wordlm", "mixer1d", "sorter", "mnist1d-mlp", "mnist1d-cnn")
RULE_MODELS = ("sorter-b95", "sorter-long-b95", "mixer1d-long-b95")
CACHE = Path(__file__).resolve().parent / "results" / "noise_advice.json"
ORIGINAL = adam_rules.ORIGINAL
#: benchmarks/reproduce_smith.py's recipe for the SGD models (they record none of their own).
SGD_RECIPE = {"schedule": "MultiStepLR(milestones=[3, 6, 8], gamma=0.2)", "schedule_unit": "epoch", "epochs": 10}
#: The old advise's keep-the-batch threshold (B0 ≥ this × B_noise where the decay begins).
OLD_NOISE_CAP = 4.0


# -- the models ----------------------------------------------------------------------------------------------
def _beta2(target, beta2: float):
    """``target`` training with AdamW betas (β1, ``beta2``), through its own optimizer settings."""
    target.optimizer_kwargs = {**target.optimizer_kwargs, "betas": (target.beta1, beta2)}
    target.metadata = {**target.metadata, "beta2": beta2}
    return target


#: The AdamW models written as a new user would, in the order they were written, and their modules here: gauss_mlp
#: (its recipe β2 0.95 with clipping), wave_cnn, tagger_gru (after the growth limit was chosen), fourier_mlp and
#: compare_transformer (after the finer staircase was chosen).
NEW_USER_MODELS = {"gauss": "gauss_mlp", "wave": "wave_cnn", "tagger": "tagger_gru", "fourier": "fourier_mlp",
                   "compare": "compare_transformer"}


def load(name: str):
    """The model ``name`` as a Target with the recipe it is trained with here."""
    from bsadvisor.targets.loading import load_target

    if name.startswith("mnist1d-"):
        target = load_target(f"builtin:{name}")
        target.metadata = {**target.metadata, **SGD_RECIPE}
        return target
    if name in NEW_USER_MODELS:  # their own recipes, as written
        return importlib.import_module(NEW_USER_MODELS[name]).make_target()
    if name == "sorter-b95":
        return _beta2(load_target("builtin:sorter"), 0.95)
    if name == "sorter-long-b95":
        import torch

        from bsadvisor.targets.builtins import SORTER_LR, SORTER_TRAIN, _warmup_cosine, sorter_data

        target = load_target("builtin:sorter")
        train = sorter_data(6 * SORTER_TRAIN, 1234)
        target.train_dataset = torch.utils.data.TensorDataset(train[:, :-1], train[:, 1:])
        steps = -(-len(train) // target.batch_size)
        target.metadata = {**target.metadata, "schedule": _warmup_cosine(steps, SORTER_LR)}
        return _beta2(target, 0.95)
    if name == "mixer1d-long-b95":
        from bsadvisor.targets.builtins import MIXER_LR, _warmup_cosine

        target = load_target("builtin:mixer1d")
        steps = 3 * -(-target.dataset_size // target.batch_size)
        target.metadata = {**target.metadata, "epochs": 3, "schedule": _warmup_cosine(steps, MIXER_LR)}
        return _beta2(target, 0.95)
    # the AdamW models with the cached table's recipe (β2 0.999, no clipping), whatever their own is now
    return adam_rules.build_target(name)


# -- the cache -----------------------------------------------------------------------------------------------
def load_cache() -> dict:
    return adam_rules.load_cache(CACHE, "bsadvisor.noise_advice/1")


def save_cache(cache: dict) -> None:
    """Write ``cache`` merged over what the file holds now (adam_rules.save_cache merges its runs and noise)."""
    cache["vhat"] = {**load_cache().get("vhat", {}), **cache.get("vhat", {})}
    adam_rules.save_cache(cache, CACHE)


def cached_run(cache: dict, shared: dict, k: str):
    """A run from this cache or adam_rules.json (the same training there)."""
    return cache["runs"].get(k) or shared["runs"].get(k)


# -- measuring -----------------------------------------------------------------------------------------------
def warmup_updates(plan, b0: int) -> int:
    """Updates the recipe warms up for: those before the LR first stops rising (0: no warmup)."""
    update, lr = 0, plan.at_sample(0).lr
    while (update + 1) * b0 < plan.total_samples:
        nxt = plan.at_sample((update + 1) * b0).lr
        if nxt <= lr:
            return update
        update, lr = update + 1, nxt
    return 0


def measure_probe(target, warmup_steps=None) -> dict:
    """The probe's noise point (its default budget; memory and throughput skipped), after ``warmup_steps``
    updates at the target's LR (None: the probe's default, 2 % of an epoch)."""
    from bsadvisor.measure.probe import probe

    started = time.perf_counter()
    # the scout's budget lets its longer warmup finish (the probe stops warming up at 20 % of the budget)
    r = probe(target, measure_memory=False, measure_throughput=False, seed=0, warmup_steps=warmup_steps,
              budget_seconds=12.0 if warmup_steps is None else 60.0)
    n, s = r.noise, r.settings
    return {"b_simple": n.b_simple, "ci90": [n.ci90[0], None if n.ci90[1] == math.inf else n.ci90[1]],
            "ci_kind": n.ci_kind, "lr": s.lr, "momentum": s.momentum, "batch_size": s.batch_size,
            "warmup_steps": s.warmup_steps, "seconds": time.perf_counter() - started}


ADVISE = "advise"
#: What ``advise`` recommended before AdamW's growth limit (the full conversion), kept for the record.
ADVISE_FULL = "advise-full"
#: What it recommended with AdamW's growth limit and the staircase of ratio 1.25, before the ratio 1.05 under that
#: limit (its runs are ``linear+b2``'s), kept for the record.
ADVISE_B2 = "advise-b2"
#: The cache's key of the scout (the probe after the recipe's warmup).
SCOUT = "scout_after_warmup"


def make_plan(target, config: str, noise: dict):
    """``advise``: the plan ``bsadvisor.advise`` recommends with its defaults (cached; ``advise-full``: what it
    recommended before the growth limit, ``advise-b2`` before the finer staircase under it); else adam_rules'
    config."""
    if config in (ADVISE, ADVISE_FULL, ADVISE_B2):
        from bsadvisor.core.plan import Plan

        return Plan.from_dict(noise[config])
    return adam_rules.make_plan(target, config, noise)


def advise_plan(target) -> dict:
    """What ``bsadvisor advise TARGET`` recommends with its defaults (the probe on the CPU, seed 0), as a dict."""
    from bsadvisor.measure.advise import advise
    from bsadvisor.runtime.recipe import options_for_target

    rec = advise(target, options_for_target(target), device="cpu", seed=0)
    print(f"  {target.name}: advise recommends {rec.recommendation}: {rec.plan.stage_batch_sizes()}, "
          f"{rec.plan.updates} updates", flush=True)
    return rec.plan.to_dict()


def run_model(name: str, configs: list[str], seeds: int, cache: dict, shared: dict, scout: bool) -> None:
    """Train what neither cache has (the original's seed 0 with the monitor), then the probes. A config that
    trains exactly as one already run (adam_rules.same_training) copies its runs."""
    from bsadvisor.runtime.train import initial_state

    target = load(name)
    init = initial_state(target.model)
    noise = cache["noise"].setdefault(name, {})
    for k in ("probe", "trace"):
        if k not in noise and shared["noise"].get(name, {}).get(k) and not name.startswith("sorter-"):
            noise[k] = shared["noise"][name][k]
    if ADVISE in configs and ADVISE not in noise:
        noise[ADVISE] = advise_plan(target)
        target.model.load_state_dict(init)
        save_cache(cache)
    built = {}
    for config in [ORIGINAL] + configs:
        plan = make_plan(target, config, noise)
        same = next((c for c, other in built.items() if adam_rules.same_training(plan, other)), None)
        built[config] = plan

        def store(k: str, row: dict) -> None:
            cache["runs"][k] = row
            save_cache(cache)

        adam_rules.train_seeds(name, config, plan, seeds, target, init, noise, same,
                               lambda k: cached_run(cache, shared, k), store)
    if scout and "probe" not in noise:
        noise["probe"] = measure_probe(target)
        target.model.load_state_dict(init)
        save_cache(cache)
    if scout and SCOUT not in noise:
        plan = make_plan(target, ORIGINAL, noise)
        steps = max(warmup_updates(plan, target.batch_size), math.ceil(0.02 * plan.updates))
        noise[SCOUT] = measure_probe(target, steps)
        target.model.load_state_dict(init)
        save_cache(cache)
        p = noise[SCOUT]
        print(f"  {name}: scout after {steps} updates: B_simple {p['b_simple']:.3g} {p['ci90']} ({p['ci_kind']})",
              flush=True)


# -- the report ----------------------------------------------------------------------------------------------
def verdict_row(cache: dict, shared: dict, name: str, config: str, reference: str = ORIGINAL):
    cand, ref = [], []
    seed = 0
    while True:
        c = cached_run(cache, shared, adam_rules.key(name, config, seed))
        r = cached_run(cache, shared, adam_rules.key(name, reference, seed))
        if c is None or r is None:
            break
        cand.append(c)
        ref.append(r)
        seed += 1
    if not cand:
        return None
    v = paired_verdict([r["metric"] for r in cand], [r["metric"] for r in ref])
    return {"verdict": v, "seeds": len(cand), "ratio": ref[0]["updates"] / cand[0]["updates"]}


def noise_features(target, plan, noise: dict) -> dict:
    """B/B_simple along the run (start: first bounded point after the warmup; late: the last bounded one),
    the growth of B_simple between them, the old advise's decision, the probe's and the scout's readings."""
    out: dict = {}
    b0 = target.batch_size
    warm = warmup_updates(plan, b0) * b0
    trace = [p for p in noise.get("trace") or [] if p["sample"] >= warm]
    pts = [p for p in trace if p["ci_kind"] == "bounded" and p["b_simple"] > 0]
    if pts:
        ratios = [plan.at_sample(p["sample"]).batch_size / p["b_simple"] for p in pts]
        out.update(start=ratios[0], max=max(ratios), growth=pts[-1]["b_simple"] / pts[0]["b_simple"],
                   b_start=pts[0]["b_simple"], b_late=pts[-1]["b_simple"])
        if pts[-1]["sample"] >= plan.total_samples / 2:  # "late": a bounded point in the second half of the run
            out["late"] = ratios[-1]
    # where |G|² is not significant (SGD late in a multi-epoch run) only a lower bound on B_simple is measured:
    # an upper bound on B/B_simple over the second half of the run
    lows = [plan.at_sample(p["sample"]).batch_size / p["ci90"][0] for p in trace
            if p["ci_kind"] == "lower-bound" and (p["ci90"][0] or 0) > 0 and p["sample"] >= plan.total_samples / 2]
    if lows and "late" not in out:
        out["late_at_most"] = max(lows)
    final = plan.stages[-1].batch_size
    for k, entry in (("probe", "probe"), ("scout", SCOUT)):
        p = noise.get(entry)
        if p:
            out[k] = p["b_simple"]
            out[f"{k}_ci"] = p["ci90"]
            out[f"{k}_final"] = final / p["b_simple"] if p["b_simple"] > 0 else math.inf
    model = adam_rules.noise_model(noise, "probe")
    if model is not None:
        from bsadvisor.core.predict import keep_batch_advice
        from bsadvisor.core.recommend import recommend
        from bsadvisor.runtime.recipe import options_for_target

        capped = recommend(options_for_target(target).options, noise_trace=model, noise_cap=OLD_NOISE_CAP)
        out["old_keep"] = keep_batch_advice(capped, model) is not None
    return out


def _f(x, fmt=".2f") -> str:
    return "—" if x is None else format(x, fmt)


def print_table(cache: dict, shared: dict, models: list[str], configs: list[str],
                reference: str = ORIGINAL) -> list[dict]:
    rows = []
    print("\n| model | plan | verdict (d̄ [90% interval], seeds) | fewer updates | B/B_simple start · late · max "
          "| B_simple growth | probe at init (old advise) | scout after warmup [90%] · final B / scout |")
    print("|---|---|---|---|---|---|---|---|")
    for m in models:
        noise = cache["noise"].get(m) or {}
        target = None
        for c in configs:
            r = verdict_row(cache, shared, m, c, reference)
            if r is None:
                continue
            target = target or load(m)
            plan = make_plan(target, c, noise)
            f = noise_features(target, plan, noise)
            v = r["verdict"]
            iv = "" if v["interval"] is None else f" [{v['interval'][0]:+.4f}, {v['interval'][1]:+.4f}]"
            late = _f(f.get("late")) if "late_at_most" not in f else f"≤ {f['late_at_most']:.2f}"
            old = "—" if "probe" not in f else (f"{f['probe']:.3g} ({'keep' if f.get('old_keep') else 'plan'})")
            sc = "—" if "scout" not in f else (f"{f['scout']:.3g} [{_f(f['scout_ci'][0], '.3g')}, "
                                               f"{_f(f['scout_ci'][1], '.3g')}] · {f['scout_final']:.2f}")
            print(f"| {m} | {c} | {v['status'].upper()} {v['difference']:+.4f}{iv}, {r['seeds']} | {r['ratio']:.2f}× | "
                  f"{_f(f.get('start'))} · {late} · {_f(f.get('max'))} | {_f(f.get('growth'), '.1f')}× "
                  f"| {old} | {sc} |")
            rows.append({"model": m, "config": c, **r, **f})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description="what the noise scale predicts about a plan's outcome")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--configs", default="linear,advise")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-scout", action="store_true", help="skip the probes (init and after the warmup)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--reference", default=ORIGINAL, help="the config every verdict is against (default: the "
                    "original; 'original*4': the original at LR × 4; 'linear+b2*4': one plan against another)")
    ap.add_argument("--vhat", action="store_true", help="Adam's v̂ at the end of the original and the default plan "
                    "(seed 0) instead of the table")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    models = [m for m in args.models.split(",") if m]
    configs = [c for c in args.configs.split(",") if c]
    if args.vhat:
        vhat_main(models)
        return 0
    cache, shared = load_cache(), adam_rules.load_cache()
    started = time.perf_counter()
    if not args.table_only:
        for m in models:
            run_model(m, configs, args.seeds, cache, shared, scout=not args.no_scout)
    print_table(cache, shared, models, configs, args.reference)
    print(f"\n(δ = 0.005 in the metric's units; B: the plan's batch at the monitor's samples; "
          f"{time.perf_counter() - started:.0f} s this call)")
    return 0



# -- Adam's second moment: does v̂ follow the batch? ------------------------------------------------------------
def vhat_diagnostic(name: str, seed: int = 0) -> dict:
    """Train the original and the default plan of ``name`` (seed ``seed``) and read Adam's bias-corrected
    second moment at the end: √(Σv̂_plan / Σv̂_original) (1: v̂ did not follow the batch; √(B0/B_end) if it
    followed it fully) and each run's staleness √(Σv̂ / Σg²_last), g the last update's gradient (v̂ remembers
    larger early gradients when it is ≫ 1)."""
    from bsadvisor.runtime.train import initial_state, train_plan

    target = load(name)
    init = initial_state(target.model)
    made = []
    make = target.make_optimizer

    def keep(params=None, lr=None, momentum=None):
        opt = make(params, lr=lr, momentum=momentum)
        made.append(opt)
        return opt

    target.make_optimizer = keep
    out = {}
    for config in (ORIGINAL, "linear"):
        plan = make_plan(target, config, {})
        made.clear()
        train_plan(target, plan, seed=seed, init_state=init)
        opt = made[-1]
        v = g = 0.0
        for group in opt.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                st = opt.state.get(p) or {}
                if "exp_avg_sq" not in st:
                    continue
                step = float(st["step"])
                v += float(st["exp_avg_sq"].sum()) / (1 - beta2 ** step)
                g += float((p.grad ** 2).sum()) if p.grad is not None else 0.0
        out[config] = {"vhat": v, "grad_sq": g, "last_batch": plan.stages[-1].batch_size,
                       "beta2": opt.param_groups[0]["betas"][1], "updates": plan.updates}
    o, p = out[ORIGINAL], out["linear"]
    out["ratio"] = (p["vhat"] / o["vhat"]) ** 0.5
    out["if_followed"] = (o["last_batch"] / p["last_batch"]) ** 0.5
    out["stale_original"] = (o["vhat"] / o["grad_sq"]) ** 0.5 if o["grad_sq"] else None
    out["stale_plan"] = (p["vhat"] / p["grad_sq"]) ** 0.5 if p["grad_sq"] else None
    return out


def vhat_main(models: list[str]) -> None:
    cache = load_cache()
    for m in models:
        d = cache.setdefault("vhat", {}).get(m)
        if d is None:
            d = vhat_diagnostic(m)
            cache = load_cache()
            cache.setdefault("vhat", {})[m] = d
            save_cache(cache)
        print(f"  {m}: √(v̂_plan/v̂_orig) at the end {d['ratio']:.2f} (if v̂ followed the batch: "
              f"{d['if_followed']:.2f}); √(v̂/g²_last) original {d['stale_original']:.2f}, plan {d['stale_plan']:.2f}; "
              f"β2 {d['original']['beta2']}, {d['original']['updates']} → {d['linear']['updates']} updates", flush=True)


if __name__ == "__main__":
    sys.exit(main())
