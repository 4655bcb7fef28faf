"""Spine benchmark: what cost tracking costs, and how the UBA schedule compares on a fixed budget.

Tracking overhead is measured two ways on the same fixed CPU workload (a small MLP trained with
one torch thread): (1) A/B wall time, untracked vs tracked, interleaved — honest but as noisy as
the machine; (2) the CPU time burnt by the tracker's own threads (CodeCarbon's sampler and the RSS
sampler) per second — each periodic job timed directly in CPU seconds and multiplied by its rate —
plus its start/stop time, as a fraction of the tracked wall time: the part of the overhead that the
tracker itself causes, insensitive to other load.
"""

from __future__ import annotations

import time

import torch

from poise.carbon import CostTracker
from poise.schedules import lr_at


def _workload(steps: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 256), torch.randint(0, 10, (256,))
    loss = torch.tensor(0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return float(loss.detach())


def _per_call_cpu(fn, calls: int) -> float:
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls


def _tracker_cpu_per_second(tracker: CostTracker) -> float:
    """CPU seconds the tracker's periodic jobs burn per second of run (rate × cost of one call)."""
    cc = tracker._cc
    power = 1.0 / float(cc._measure_power_secs) * _per_call_cpu(cc._measure_power_and_energy, 20)
    monitor = 1.0 * _per_call_cpu(cc._monitor_power, 20)  # CodeCarbon's 1 s power monitor
    rss = (1.0 / tracker._sampler.interval) * _per_call_cpu(tracker._sampler.sample, 200)
    return power + monitor + rss


def _tracked(steps: int) -> tuple[float, float, float]:
    """(wall of the tracked segment, tracker CPU seconds over it, start+stop seconds)."""
    t0 = time.perf_counter()
    tracker = CostTracker("FRA").start()
    t1 = time.perf_counter()
    _workload(steps)
    t2 = time.perf_counter()
    per_second = _tracker_cpu_per_second(tracker)
    t3 = time.perf_counter()
    record = tracker.stop()
    t4 = time.perf_counter()
    assert record.energy_kwh > 0
    wall = (t2 - t0) + (t4 - t3)
    return wall, per_second * wall, (t1 - t0) + (t4 - t3)


def _untracked(steps: int) -> float:
    t0 = time.perf_counter()
    _workload(steps)
    return time.perf_counter() - t0


def _overhead(quick: bool) -> str:
    torch.set_num_threads(1)
    CostTracker("FRA").start().stop()  # first use probes the hardware once per process: not per run
    target = 5.0 if quick else 60.0
    probe = 50
    _untracked(probe)  # warm-up: first steps allocate and pick kernels
    t = _untracked(probe)
    steps = max(probe, int(probe * target / t))
    pairs = 1 if quick else 2
    rows = []
    for i in range(pairs):
        base = _untracked(steps)
        wall, threads_cpu, startstop = _tracked(steps)
        rows.append((i + 1, base, wall, threads_cpu, startstop))
    lines = [
        f"Fixed workload: {steps} SGD steps of a 256-512-10 MLP, one torch thread (~{target:.0f} s).",
        "",
        "| pair | untracked s | tracked s | A/B overhead | tracker jobs CPU s | start+stop s "
        "| intrinsic overhead |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, base, wall, threads_cpu, startstop in rows:
        lines.append(
            f"| {i} | {base:.2f} | {wall:.2f} | {100 * (wall / base - 1):+.2f}% | {threads_cpu:.3f} "
            f"| {startstop:.3f} | {100 * (threads_cpu + startstop) / wall:.2f}% |"
        )
    lines += ["", "A/B overhead is wall-clock and carries the machine's noise; intrinsic overhead counts "
              "only the CPU time of the tracker's periodic jobs and its start/stop (goal < 1%)."]
    return "\n".join(lines)


def _schedules(quick: bool) -> str:
    """Same budget, same seed: final validation loss of a small regression MLP under each schedule."""
    torch.set_num_threads(1)
    from poise.recipes import ScheduleCfg

    budget = 150 if quick else 600
    seeds = [0] if quick else [0, 1, 2]
    gen = torch.Generator().manual_seed(123)
    w_true = torch.randn(32, 1, generator=gen)
    x = torch.randn(2048, 32, generator=gen)
    y = torch.sin(2 * x @ w_true / 32**0.5) + 0.1 * torch.randn(2048, 1, generator=gen)
    xv, yv = x[1536:], y[1536:]
    x, y = x[:1536], y[:1536]
    configs = {
        "constant": ScheduleCfg(name="constant"),
        "cosine": ScheduleCfg(name="cosine", warmup_frac=0.05),
        "linear": ScheduleCfg(name="linear", warmup_frac=0.05),
        "wsd": ScheduleCfg(name="wsd", warmup_frac=0.05, decay_frac=0.2),
        "rex": ScheduleCfg(name="rex", warmup_frac=0.05),
        "uba φ=0.5": ScheduleCfg(name="uba", warmup_frac=0.05, phi=0.5),
        "uba φ=1": ScheduleCfg(name="uba", warmup_frac=0.05, phi=1.0),
        "uba φ=2": ScheduleCfg(name="uba", warmup_frac=0.05, phi=2.0),
    }
    lines = [f"Validation MSE after {budget} Adam steps (lr 3e-3, batch 64), mean over seeds {seeds}.",
             "", "| schedule | val MSE |", "|---|---:|"]
    for label, cfg in configs.items():
        losses = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            g = torch.Generator().manual_seed(seed)
            for step in range(budget):
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step, budget, 3e-3)
                idx = torch.randint(0, len(x), (64,), generator=g)
                loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                losses.append(float(torch.nn.functional.mse_loss(model(xv), yv)))
        lines.append(f"| {label} | {sum(losses) / len(losses):.4f} |")
    return "\n".join(lines)


def main(quick: bool) -> str:
    return ("### Cost-tracking overhead\n\n" + _overhead(quick)
            + "\n\n### Schedules on one budget\n\n" + _schedules(quick))


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
