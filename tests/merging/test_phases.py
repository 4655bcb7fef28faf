"""A merge splits its time and energy into ``io`` (reading, converting and writing chunks) and
``compute`` (the merge arithmetic), both in the engine and in a ``merging.merge`` run."""

from __future__ import annotations

import time

from poise.merging import merge_files
from poise.phases import PhaseClock
from tests.merging.test_cli import tiny, write
from tests.phases_check import check_phases

SHAPES = {"enc.weight": (256, 256), "enc.bias": (256,), "head.weight": (64, 256)}


def _files(tmp_path):
    return [write(tmp_path / f"{n}.safetensors", tiny(i, **SHAPES)) for i, n in enumerate(["base", "a", "b"])]


def test_engine_charges_reads_and_writes_to_io_and_the_arithmetic_to_compute(tmp_path):
    base, a, b = _files(tmp_path)
    clock = PhaseClock()
    result = merge_files([a, b], tmp_path / "out.safetensors", base=base, method="ties", density=0.5,
                         chunk=4096, phase=clock.phase)
    wall, _cpu = clock.totals()
    assert set(wall) == {"io", "compute"} and wall["io"] > 0 and wall["compute"] > 0
    assert wall["io"] + wall["compute"] <= result.seconds
    # without a phase the merge writes the same bytes
    again = merge_files([a, b], tmp_path / "again.safetensors", base=base, method="ties", density=0.5, chunk=4096)
    assert (tmp_path / "out.safetensors").read_bytes() == (tmp_path / "again.safetensors").read_bytes()
    assert again.tensors == result.tensors == 3


def test_merge_run_records_io_and_compute(runner, store, tmp_path):
    from poise.recipes import build_recipe

    base, a, b = _files(tmp_path)
    recipe = build_recipe({"kind": "merging.merge", "name": "m", "model": {
        "method": "ties", "density": 0.5, "models": [str(a), str(b)], "base": str(base),
        "output": str(tmp_path / "merged")}}, where="test")
    t0 = time.perf_counter()
    rec = runner.run(recipe)
    check_phases(store, rec, {"io", "compute"}, time.perf_counter() - t0)
