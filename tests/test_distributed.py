"""bsadvisor under torch.distributed: 2-process gloo jobs on CPU, checked against one process.

The jobs are started the way users start them, with torchrun (``python -m
torch.distributed.run``) on 127.0.0.1 and a free port, OMP_NUM_THREADS=1, a 60 s
collective timeout and a 120 s wall limit, so a hung rendezvous fails instead of hanging.
Run as a script (``--worker OUTDIR`` / ``--train-worker OUTDIR``) this file is the
per-rank worker of test_every_rank_returns_the_same_result /
test_two_process_training_checkpoints_and_resumes.

The probe is checked against the closed form of builtin:linreg; validate and the
training loop against the same run in one process (float64 model: the two differ only
by the order of floating-point sums).
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120
# every test that starts a torchrun job is slow: three interpreters importing torch, then a gloo rendezvous
torchrun_job = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", BSADVISOR_DIST_TIMEOUT="60", TORCH_DIST_INIT_BARRIER="1",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _torchrun(args: list, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


# --draws fixes the noise estimate (not the seconds: a loaded machine buys fewer draws in a budget)
PROBE_ARGS = ["builtin:linreg", "--device", "cpu", "--json", "--budget-seconds", "60", "--draws", "30",
              "--warmup-steps", "0", "--seed", "5"]


# --------------------------------------------------------------------------- worker (run under torchrun)
def _worker(outdir: str) -> None:
    import random

    import numpy as np
    import torch

    import bsadvisor
    from bsadvisor.runtime.distributed import exit_job, init_from_env
    from bsadvisor.targets.loading import load_target

    torch.set_num_threads(1)
    dist = init_from_env("cpu")
    t = load_target("builtin:linreg")
    seen = []
    inner = t.loss_fn

    def spy(m, batch):  # fingerprints of the batches this rank computes gradients on
        seen.append(float(batch[0].sum()))
        return inner(m, batch)

    t.loss_fn = spy
    w0 = t.model.weight.detach().clone()
    rng0 = torch.random.get_rng_state()
    pyrng0, nprng0 = random.getstate(), np.random.get_state()[1].copy()
    # A fixed number of draws (not a time budget) so the estimate depends on the seeds alone,
    # however loaded the machine is.
    r = bsadvisor.probe(t, device="cpu", warmup_steps=5, budget_seconds=60, seed=7, dist=dist,
                        min_draws=20, max_draws=20, measure_throughput=True)
    doc = {"result": r.to_dict(), "measured_weight": r.measured_state["weight"].reshape(-1).tolist(),
           "untouched": bool(torch.equal(w0, t.model.weight.detach()) and t.model.weight.grad is None
                             and torch.equal(rng0, torch.random.get_rng_state())
                             and random.getstate() == pyrng0 and (np.random.get_state()[1] == nprng0).all()),
           "fingerprints": seen, "rank": dist.rank, "world_size": dist.world_size}
    Path(outdir, f"rank{dist.rank}.json").write_text(json.dumps(doc))
    dist.barrier()
    exit_job(0)  # as the CLI ends a torchrun process


# --------------------------------------------------------------------------- tests
def test_no_torchrun_is_single_process(monkeypatch):
    from bsadvisor.runtime.distributed import Dist, init_from_env

    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    d = init_from_env("cpu")
    assert d == Dist() and d.is_main and not d.enabled
    import torch

    x = torch.tensor([1.0, 2.0])
    assert torch.equal(d.all_reduce(x), x) and d.all_gather_object(3) == [3] and d.broadcast_object("a") == "a"
    d.destroy()


def test_bad_environment_is_a_user_error(monkeypatch):
    from bsadvisor.runtime.distributed import init_from_env
    from bsadvisor.core.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE"):
        init_from_env("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UserError, match="RANK is not set"):
        init_from_env("cpu")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(UserError, match="outside"):
        init_from_env("cpu")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="cuda:LOCAL_RANK"):
        init_from_env("cuda:1")


def _truth_at_init() -> float:
    from bsadvisor.targets.loading import load_target

    t = load_target("builtin:linreg")
    tr, g2 = t.metadata["truth"](t.model)  # population closed form, θ = init (warmup 0)
    return tr / g2


@torchrun_job
def test_two_processes_agree_with_one_and_with_the_closed_form(tmp_path):
    """Same B_simple from a 2-process gloo job and a 1-process run; both intervals near the truth."""
    one = _in_process(["probe", *PROBE_ARGS], tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    out = tmp_path / "probe2.json"
    two = _torchrun(["-m", "bsadvisor", "probe", *PROBE_ARGS, "--out", str(out)], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    d1 = json.loads(one.stdout)
    d2 = json.loads(two.stdout)  # rank 0 alone prints: stdout is one JSON document
    assert json.loads(out.read_text()) == d2  # and rank 0 alone wrote --out (same document)
    truth = _truth_at_init()
    for d in (d1, d2):
        lo, hi = d["noise"]["ci90"]
        half = hi - lo
        assert lo - 0.5 * half <= truth <= hi + 0.5 * half, (d["noise"], truth)
        assert abs(d["noise"]["b_simple"] / truth - 1) < 0.12
    (lo1, hi1), (lo2, hi2) = d1["noise"]["ci90"], d2["noise"]["ci90"]
    assert lo1 <= hi2 and lo2 <= hi1  # intervals overlap
    assert d1["settings"]["world_size"] == 1 and d2["settings"]["world_size"] == 2
    assert d2["settings"]["batch_size"] == d1["settings"]["batch_size"] == 64  # the global batch
    # one draw: 2 ranks × 4 micro-batches of 8 → the same b and B as one process's 8 micro-batches of 8
    assert (d2["noise"]["micro_batch"], d2["noise"]["big_batch"]) == (8, 64)
    assert d2["noise"]["examples"] == 64 * d2["noise"]["draws"]  # both ranks' examples are counted
    assert d2["memory"]["max_batch"] >= 1 and d2["throughput"]


@torchrun_job
def test_every_rank_returns_the_same_result(tmp_path):
    run = _torchrun([str(Path(__file__).resolve()), "--worker", str(tmp_path)], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)
    assert r0["result"] == r1["result"]  # the whole document, timings included
    assert r0["measured_weight"] == r1["measured_weight"]  # same θ after the DDP warmup
    assert r0["untouched"] and r1["untouched"]  # side-effect free on each rank
    # DDP warmup moved θ identically on both ranks; the noise estimate is checked at that θ
    import numpy as np

    from bsadvisor.targets.builtins import linreg_truth
    from bsadvisor.targets.loading import load_target

    t = load_target("builtin:linreg")
    w = np.array(r0["measured_weight"])
    assert not np.allclose(w, t.model.weight.detach().numpy().ravel())
    tr, g2 = linreg_truth(w, t.metadata["w_star"], t.metadata["noise"])
    assert abs(r0["result"]["noise"]["b_simple"] / (tr / g2) - 1) < 0.15
    # the ranks computed gradients on different examples (seed offset by rank)
    f0, f1 = set(r0["fingerprints"]), set(r1["fingerprints"])
    assert len(f0) > 20 and len(f0 & f1) < 0.05 * len(f0)


@torchrun_job
def test_unsupported_estimator_under_torchrun_exits_2(tmp_path):
    run = _torchrun(["-m", "bsadvisor", "probe", "builtin:linreg", "--device", "cpu", "--json",
                     "--estimator", "two-batch"], tmp_path)
    assert run.returncode != 0
    assert "error: --estimator two-batch is not supported under torchrun" in run.stderr
    assert "exitcode  : 2" in run.stderr  # UserError on the rank: one line, exit 2 (torchrun reports it)
    assert run.stdout == ""


# --------------------------------------------------------------------------- validate / training
# B0 = 43 does not divide over 2 ranks (shares of 22 and 21) and N = 16384 = 381·43 + 1 leaves a
# last batch of one example: rank 1 has an empty share there and joins the all-reduce with a
# zero-weighted stand-in. --max-micro-batch 16 makes every share accumulate under no_sync.
CONVERT = ["convert-schedule", "--lr", "0.01", "--batch-size", "43", "--dataset-size", "16384", "--epochs", "3",
           "--schedule", "MultiStepLR(milestones=[1,2], gamma=0.5)"]
MICRO = 16


def _in_process(args: list, cwd: Path) -> subprocess.CompletedProcess:
    """A one-process command through the CLI's entry point in this process (no interpreter to start)."""
    from hostile import run_main

    return run_main(args, cwd=cwd)


def _final_weights(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)  # checkpoints hold no pickled objects


@torchrun_job
def test_validate_two_processes_match_one(tmp_path):
    """Same plan, seed and data order: 2-process DDP ends at the 1-process parameters, to float tolerance."""
    import torch

    conv = _in_process([*CONVERT, "--out", "plan.json"], tmp_path)  # a plan made for one device
    assert conv.returncode == 0, conv.stderr
    args = ["validate", "builtin:linreg", "--device", "cpu", "--max-micro-batch", str(MICRO), "--json"]
    two = _torchrun(["-m", "bsadvisor", *args, "--plan", "plan.json", "--out", "two"], tmp_path)
    # one seed: INDICATIVE, exit 3 on every rank, which torchrun reports as its own exit 1
    assert two.returncode == 1 and "exitcode  : 3" in two.stderr, two.stderr[-3000:]
    # rank 0 alone says the plan was rounded for 2 processes, once
    assert two.stderr.count("note: 2 processes: batches rounded to") == 1, two.stderr[-2000:]
    d2 = json.loads(two.stdout)  # and rank 0 alone prints one document
    fitted = d2["runs"]["plan"]["plan"]
    batches = [s["batch_size"] for s in fitted["stages"]]
    assert batches != [s["batch_size"] for s in json.loads((tmp_path / "plan.json").read_text())["stages"]]
    for b in batches[1:]:  # 2 devices × k steps × an equal micro-batch ≤ 16, k the fewest that fit
        k = -(-b // (2 * MICRO))
        assert b % (2 * k) == 0 and b // (2 * k) <= MICRO
    (tmp_path / "fitted.json").write_text(json.dumps(fitted))
    one = _in_process([*args, "--plan", "fitted.json", "--out", "one"], tmp_path)
    assert one.returncode == 3, one.stderr[-2000:]
    d1 = json.loads(one.stdout)
    assert json.loads((tmp_path / "two" / "results.json").read_text())["runs"].keys() == d2["runs"].keys()
    assert (d1["world_size"], d2["world_size"]) == (1, 2)
    for name in ("original", "plan"):
        r1, r2 = d1["runs"][name], d2["runs"][name]
        assert r1["plan"]["stages"] == r2["plan"]["stages"]
        assert r1["summary"]["updates"] == r2["summary"]["updates"] and r1["summary"]["examples"] == r2["summary"]["examples"]
        for h1, h2 in zip(r1["seeds"][0]["history"], r2["seeds"][0]["history"]):
            assert math.isclose(h1["train_loss"], h2["train_loss"], rel_tol=1e-9)
            assert math.isclose(h1["metric"], h2["metric"], rel_tol=1e-9)
        c1 = _final_weights(tmp_path / "one" / "checkpoints" / f"{name}-seed0.pt")
        c2 = _final_weights(tmp_path / "two" / "checkpoints" / f"{name}-seed0.pt")
        w1, w2 = c1["model"]["weight"], c2["model"]["weight"]
        assert not torch.allclose(w1, _final_weights_init())  # it trained
        assert torch.allclose(w1, w2, rtol=0, atol=1e-10), (w1 - w2).abs().max()
        assert c2["meta"]["world_size"] == 2 and len(c2["rng"]) == 2  # every rank's RNG state
        e1, e2 = r1["seeds"][0]["evals"], r2["seeds"][0]["evals"]  # the curve points, inside epochs too
        assert len(e1) == len(e2) >= 5 and [e["samples"] for e in e1] == [e["samples"] for e in e2]
        assert all(math.isclose(a["metric"], b["metric"], rel_tol=1e-9) for a, b in zip(e1, e2))
    # the paired verdict is the same under torchrun: status, difference and the per-seed d_s
    v1, v2 = d1["verdict"], d2["verdict"]
    assert v2["status"] == v1["status"] == "indicative"
    assert math.isclose(v1["difference"], v2["difference"], rel_tol=1e-9, abs_tol=1e-12)
    assert len(v2["paired"]) == 1 and v2["interval"] is None  # one seed: no interval


def _final_weights_init():
    from bsadvisor.targets.loading import load_target

    return load_target("builtin:linreg").model.weight.detach().clone()


def _train_worker(outdir: str) -> None:
    """Full run; the same run stopped after epoch 2; then resumed from rank 0's checkpoint."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from bsadvisor.core.convert import convert_schedule
    from bsadvisor.runtime.distributed import exit_job, init_from_env
    from bsadvisor.targets.loading import load_target
    from bsadvisor.runtime.train import initial_state, train_plan

    torch.set_num_threads(1)
    dist = init_from_env("cpu")
    inner = {"n": 0}
    no_sync = DistributedDataParallel.no_sync

    def counting(self):  # how many micro-batches skipped the all-reduce
        inner["n"] += 1
        return no_sync(self)

    DistributedDataParallel.no_sync = counting
    t = load_target("builtin:linreg")
    # B0 = 44 (B0 is kept as given; 43 would leave a one-example last batch, which the BatchNorm part below
    # cannot train on)
    plan = convert_schedule(lr=0.01, batch_size=44, dataset_size=t.dataset_size, epochs=4, momentum=0.9,
                            schedule="MultiStepLR(milestones=[1,2,3], gamma=0.5)", max_batch=4000,
                            world_size=dist.world_size, micro_batch=MICRO)
    init = initial_state(t.model)
    out = Path(outdir)
    full = train_plan(t, plan, seed=3, name="plan", init_state=init, max_micro_batch=MICRO, dist=dist,
                      checkpoint=out / "full.pt")
    n_full = inner["n"]
    w_full = t.model.weight.detach().reshape(-1).tolist()

    class Stop(Exception):
        pass

    def stop_after_two(rec):
        if rec["epoch"] == 2:
            raise Stop

    try:
        train_plan(t, plan, seed=3, name="plan", init_state=init, max_micro_batch=MICRO, dist=dist,
                   checkpoint=out / "cut.pt", on_epoch=stop_after_two)
    except Stop:
        pass
    t.model.load_state_dict(init)
    resumed = train_plan(t, plan, seed=3, name="plan", init_state=init, max_micro_batch=MICRO, dist=dist,
                         checkpoint=out / "cut.pt", resume=True)
    w_resumed = t.model.weight.detach().reshape(-1).tolist()
    # BatchNorm: each rank's running statistics follow its own share; rank 0's are kept
    torch.manual_seed(0)
    t.model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1)).double()
    t.loss_fn = lambda m, b: torch.nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1])
    t.metric_fn = lambda m, b: -float(torch.nn.functional.mse_loss(m(b[0]).squeeze(-1), b[1]))
    bn = train_plan(t, plan, seed=1, name="bn", dist=dist)
    doc = {"rank": dist.rank, "plan": plan.to_dict(), "full": full.to_dict(), "resumed": resumed.to_dict(),
           "w_full": w_full, "w_resumed": w_resumed, "no_sync_full": n_full,
           "bn_running_mean": t.model[1].running_mean.tolist(), "bn_metric": bn.final["metric"]}
    Path(outdir, f"train{dist.rank}.json").write_text(json.dumps(doc))
    dist.barrier()
    exit_job(0)  # as the CLI ends a torchrun process


@torchrun_job
def test_two_process_training_checkpoints_and_resumes(tmp_path):
    """train_plan under DDP: no_sync inner steps, rank-0 checkpoints, resume by all, = one process."""
    import torch

    from bsadvisor.core.errors import UserError
    from bsadvisor.core.plan import Plan
    from bsadvisor.targets.loading import load_target
    from bsadvisor.runtime.train import initial_state, train_plan

    run = _torchrun([str(Path(__file__).resolve()), "--train-worker", str(tmp_path)], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"train{i}.json").read_text()) for i in (0, 1))
    assert r0["full"] == r1["full"]  # every rank reports the same numbers (wall time: the slowest rank's)
    assert r0["w_full"] == r1["w_full"]  # DDP keeps the replicas identical
    assert r0["resumed"]["resumed_from_epoch"] == 2
    assert r0["w_resumed"] == r0["w_full"] and r1["w_resumed"] == r1["w_full"]  # exact resume, every rank
    assert r0["bn_running_mean"] == r1["bn_running_mean"] and r0["bn_metric"] == r1["bn_metric"]
    # no_sync: every micro-batch but the last of each rank's share, counted independently
    plan = Plan.from_dict(r0["plan"])
    for r in (r0, r1):
        expected = 0
        for stage in plan.stages:
            b, n = stage.batch_size, 16384
            sizes = [b] * (n // b) + ([n % b] if n % b else [])
            for g in sizes:
                share = g // 2 + (r["rank"] < g % 2)
                expected += (stage.samples // n) * (max(1, -(-share // MICRO)) - 1)
        assert r["no_sync_full"] == expected > 0
    # one process, same plan and seed: the same parameters and losses
    t = load_target("builtin:linreg")
    one = train_plan(t, plan, seed=3, name="plan", init_state=initial_state(t.model), max_micro_batch=MICRO)
    w1 = t.model.weight.detach().reshape(-1)
    assert torch.allclose(w1, torch.tensor(r0["w_full"], dtype=w1.dtype), rtol=0, atol=1e-10)
    for h1, h2 in zip(one.history, r0["full"]["history"]):
        assert math.isclose(h1["train_loss"], h2["train_loss"], rel_tol=1e-9)
    # only rank 0 wrote; a 2-process checkpoint is refused by a 1-process resume, with the reason
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["cut.pt", "full.pt"]
    t2 = load_target("builtin:linreg")
    with pytest.raises(UserError, match="2-process run; resume it with the same number of processes"):
        train_plan(t2, plan, seed=3, name="plan", max_micro_batch=MICRO, checkpoint=tmp_path / "cut.pt", resume=True)


def _monitor_plan():
    from bsadvisor.core.baseline import baseline_plan

    return baseline_plan(lr=0.01, batch_size=64, dataset_size=16384, epochs=1, momentum=0.9,
                         schedule="ExponentialLR(gamma=0.5)")


def _monitor_worker(outdir: str) -> None:
    """2-process DDP with the noise monitor: each rank's gradient before the all-reduce is a small batch."""
    import torch

    from bsadvisor.runtime.distributed import exit_job, init_from_env
    from bsadvisor.runtime.train import train_plan
    from bsadvisor.targets.loading import load_target

    torch.set_num_threads(1)
    dist = init_from_env("cpu")
    t = load_target("builtin:linreg")
    r = train_plan(t, _monitor_plan(), seed=2, dist=dist, noise_monitor={"window": 16})
    Path(outdir, f"monitor{dist.rank}.json").write_text(json.dumps({"trace": [p.to_dict() for p in r.noise_trace],
                                                                     "w": t.model.weight.reshape(-1).tolist()}))
    dist.barrier()
    exit_job(0)


@torchrun_job
def test_two_processes_measure_the_noise_scale_from_the_ranks_gradients(tmp_path):
    """Under DDP the ranks' shares are the small batches (replica estimator, AdaptDL): the trace equals the one
    a single process reads from two accumulated micro-batches of the same halves, and is the same on every rank."""
    from bsadvisor.runtime.train import train_plan
    from bsadvisor.targets.loading import load_target

    run = _torchrun([str(Path(__file__).resolve()), "--monitor-worker", str(tmp_path)], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"monitor{i}.json").read_text()) for i in (0, 1))
    assert r0 == r1
    t = load_target("builtin:linreg")
    one = train_plan(t, _monitor_plan(), seed=2, max_micro_batch=32, noise_monitor={"window": 16})
    two = r0["trace"]
    assert len(two) == len(one.noise_trace) == 16384 // 64 // 16
    for a, b in zip(two, one.noise_trace):
        assert (a["how"], b["how"]) == ("replicas", "accumulation")
        assert a["sample"] == b["sample"] and a["ci_kind"] == b["ci_kind"]
        assert math.isclose(a["b_simple"], b["b_simple"], rel_tol=1e-6)
        assert all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a["ci90"], b["ci90"]) if x and y)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--monitor-worker":
    _monitor_worker(sys.argv[2])
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(sys.argv[2])
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--train-worker":
    _train_worker(sys.argv[2])
