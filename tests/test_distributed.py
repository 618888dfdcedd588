"""bsadvisor probe under torch.distributed: 2-process gloo jobs on CPU, checked against the closed form.

The jobs are started the way users start them, with torchrun (``python -m
torch.distributed.run``) on 127.0.0.1 and a free port, OMP_NUM_THREADS=1, a 60 s
collective timeout and a 120 s wall limit, so a hung rendezvous fails instead of hanging.
Run as a script (``--worker OUTDIR``) this file is the per-rank worker of
test_every_rank_returns_the_same_result.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


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


PROBE_ARGS = ["builtin:linreg", "--device", "cpu", "--json", "--budget-seconds", "4", "--warmup-steps", "0",
              "--seed", "5"]


# --------------------------------------------------------------------------- worker (run under torchrun)
def _worker(outdir: str) -> None:
    import random

    import numpy as np
    import torch

    import bsadvisor
    from bsadvisor.distributed import init_from_env
    from bsadvisor.target import load_target

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
    dist.destroy()


# --------------------------------------------------------------------------- tests
def test_no_torchrun_is_single_process(monkeypatch):
    from bsadvisor.distributed import Dist, init_from_env

    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    d = init_from_env("cpu")
    assert d == Dist() and d.is_main and not d.enabled
    import torch

    x = torch.tensor([1.0, 2.0])
    assert torch.equal(d.all_reduce(x), x) and d.all_gather_object(3) == [3] and d.broadcast_object("a") == "a"
    d.destroy()


def test_bad_environment_is_a_user_error(monkeypatch):
    import pytest

    from bsadvisor.distributed import init_from_env
    from bsadvisor.errors import UserError

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
    from bsadvisor.target import load_target

    t = load_target("builtin:linreg")
    tr, g2 = t.metadata["truth"](t.model)  # population closed form, θ = init (warmup 0)
    return tr / g2


def test_two_processes_agree_with_one_and_with_the_closed_form(tmp_path):
    """Same B_simple from a 2-process gloo job and a 1-process run; both intervals near the truth."""
    one = subprocess.run([sys.executable, "-m", "bsadvisor", "probe", *PROBE_ARGS], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=TIMEOUT_S)
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

    from bsadvisor.builtins import linreg_truth
    from bsadvisor.target import load_target

    t = load_target("builtin:linreg")
    w = np.array(r0["measured_weight"])
    assert not np.allclose(w, t.model.weight.detach().numpy().ravel())
    tr, g2 = linreg_truth(w, t.metadata["w_star"], t.metadata["noise"])
    assert abs(r0["result"]["noise"]["b_simple"] / (tr / g2) - 1) < 0.15
    # the ranks computed gradients on different examples (seed offset by rank)
    f0, f1 = set(r0["fingerprints"]), set(r1["fingerprints"])
    assert len(f0) > 20 and len(f0 & f1) < 0.05 * len(f0)


def test_unsupported_estimator_under_torchrun_exits_2(tmp_path):
    run = _torchrun(["-m", "bsadvisor", "probe", "builtin:linreg", "--device", "cpu", "--json",
                     "--estimator", "two-batch"], tmp_path)
    assert run.returncode != 0
    assert "error: --estimator two-batch is not supported under torchrun" in run.stderr
    assert "exitcode  : 2" in run.stderr  # UserError on the rank: one line, exit 2 (torchrun reports it)
    assert run.stdout == ""


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(sys.argv[2])
