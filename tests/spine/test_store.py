"""Run store: records, metrics upserts, artifacts by content, atomic checkpoints, concurrent writers —
each on SQLite and on a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from poise.errors import UserError
from poise.statefile import flatten, unflatten
from poise.store import CostRecord, Store


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """The database of the store under test: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / '.poise' / 'poise.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str, tmp_path: Path):
    s = Store(store_url, root=tmp_path / ".poise")
    yield s
    s.close()


def new_run(store: Store, **kw) -> str:
    args = dict(kind="vision.erm", name="r", config={"a": 1}, config_hash="h" * 64, seed=0)
    args.update(kw)
    return store.create_run(**args)


def test_run_lifecycle_and_prefix_lookup(store):
    rid = new_run(store)
    rec = store.get_run(rid[:6])
    assert rec.id == rid and rec.status == "running" and rec.config == {"a": 1}
    store.set_status(rid, "done")
    assert store.get_run(rid).status == "done"
    assert store.get_run(rid).ended is not None
    assert store.find_done("h" * 64).id == rid
    with pytest.raises(UserError, match="no run"):
        store.get_run("ffffffff")
    with pytest.raises(UserError, match="too short"):
        store.get_run("ab")


def test_metric_upsert_keeps_one_row_per_step(store):
    rid = new_run(store)
    store.log_metrics(rid, [("loss", "train", "min", 0, 2.0), ("loss", "train", "min", 1, 1.0)])
    store.log_metrics(rid, [("loss", "train", "min", 1, 0.5)])  # a resumed run re-logs step 1
    rows = store.metrics([rid])
    assert [(r.step, r.value) for r in rows] == [(0, 2.0), (1, 0.5)]
    final = store.final_metrics([rid])[rid]
    assert final["train.loss"].value == 0.5 and final["train.loss"].step == 1


def test_artifacts_are_content_addressed_and_verified(store):
    r1, r2 = new_run(store), new_run(store)
    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    a1 = store.save_tensors(r1, "model", t, {"arch": "x"})
    a2 = store.save_tensors(r2, "model", {"w": t["w"].clone()}, {"arch": "x"})
    assert a1.sha256 == a2.sha256 and a1.path == a2.path  # stored once
    tensors, meta = store.load_tensors(r2, "model")
    assert torch.equal(tensors["w"], t["w"]) and meta == {"arch": "x"}
    store.delete_run(r1)
    assert a2.path.exists()  # still referenced by r2
    a2.path.write_bytes(a2.path.read_bytes()[:-4] + b"oops")
    with pytest.raises(UserError, match="corrupt"):
        store.load_tensors(r2, "model")
    with pytest.raises(UserError, match="no artifact"):
        store.load_tensors(r2, "missing")


def test_checkpoints_are_atomic_and_pruned(store):
    rid = new_run(store)
    for step in (10, 20, 30):
        tensors, skel = flatten({"x": torch.full((2,), float(step)), "step": step})
        store.save_checkpoint(rid, step, tensors, skel, keep=2)
    # a crash mid-write leaves only a hidden temp folder, which is ignored
    (store.checkpoint_dir(rid) / ".tmp-000000040-abc").mkdir()
    step, tensors, skel = store.latest_checkpoint(rid)
    assert step == 30 and torch.equal(unflatten(tensors, skel)["x"], torch.full((2,), 30.0))
    assert sorted(p.name for p in store.checkpoint_dir(rid).glob("ckpt-*")) == ["ckpt-000000020", "ckpt-000000030"]


def test_costs_add_up_over_segments(store):
    rid = new_run(store)
    store.record_cost(rid, 0, CostRecord(wall_s=2, cpu_s=1, peak_rss_mb=100, energy_kwh=1e-3, co2_g=0.5, method="m"))
    store.record_cost(rid, 0, CostRecord(wall_s=3, cpu_s=2, peak_rss_mb=120, energy_kwh=2e-3, co2_g=1.0, method="m"))
    assert store.next_segment(rid) == 1
    store.record_cost(rid, 1, CostRecord(wall_s=4, cpu_s=1, peak_rss_mb=90, energy_kwh=1e-3, co2_g=0.5, method="m"))
    c = store.cost(rid)
    assert (c.wall_s, c.cpu_s, c.peak_rss_mb, c.segments) == (7, 3, 120, 2)
    assert c.energy_kwh == pytest.approx(3e-3) and c.co2_g == pytest.approx(1.5)


def test_optimizer_state_round_trips_without_pickle():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "rng": torch.get_rng_state(), "t": (1, 2.5, "x", None)}
    tensors, skel = flatten(state)
    back = unflatten(tensors, skel)
    assert back["t"] == (1, 2.5, "x", None)
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back["opt"])
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    assert torch.equal(opt2.state[opt2.param_groups[0]["params"][0]]["exp_avg"], opt.state[model.weight]["exp_avg"])


def _writer(url: str, root: str, run_id: str, worker: int, n: int) -> None:
    s = Store(url, root=root)
    for i in range(n):
        s.log_metrics(run_id, [(f"w{worker}", "train", "min", i, float(worker * 10_000 + i))])
    s.close()


def test_concurrent_writers_lose_nothing(store_url: str, tmp_path: Path):
    root = str(tmp_path / ".poise")
    rid = "c" * 12
    ctx = mp.get_context("spawn")
    # eight processes open the fresh store at once (each creates the tables if missing), then write
    procs = [ctx.Process(target=_writer, args=(store_url, root, rid, w, 500)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    store = Store(store_url, root=root)
    rows = store.metrics([rid])
    assert len(rows) == 4000
    assert len({(r.name, r.step) for r in rows}) == 4000
    assert {r.value for r in rows} == {float(w * 10_000 + i) for w in range(8) for i in range(500)}


def test_tied_weights_save_as_artifact_and_checkpoint(store):
    """Tied embeddings share memory, which safetensors refuses: they are saved as copies, reloaded equal."""
    import torch

    emb = torch.nn.Embedding(7, 3)
    head = torch.nn.Linear(3, 7, bias=False)
    head.weight = emb.weight  # tied, as in many causal LMs
    sd = {"embed.weight": emb.weight, "head.weight": head.weight, "view": emb.weight[2:4]}
    rid = store.create_run(kind="t", name="tied", config={}, config_hash="h", seed=0)
    store.save_tensors(rid, "model", sd)
    back, _ = store.load_tensors(rid, "model")
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    path = store.save_checkpoint(rid, 3, sd, {"s": 1})
    assert (path / "tensors.safetensors").is_file()
