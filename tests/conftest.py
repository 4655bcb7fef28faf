"""Shared fixtures: a store in a temporary folder, a quiet runner, and the CLI called in-process."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("POISE_COUNTRY", "FRA")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.pop("POISE_STORE", None)
# the cached catalogue of kinds (poise recipes) goes to a folder of the test session, not the user's cache
os.environ.setdefault("POISE_CACHE_DIR", tempfile.mkdtemp(prefix="poise-cache-"))
# tests run two to a machine (pytest -n 2): one intra-op thread each avoids oversubscription
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)
# a loaded machine must not turn slow examples into failures: no per-example deadline
settings.register_profile("poise", deadline=None)
settings.load_profile("poise")

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


@pytest.fixture
def store(tmp_path: Path):
    from poise.store import Store

    s = Store(root=tmp_path / ".poise")
    yield s
    s.close()


@pytest.fixture
def runner(store):
    from poise.runner import Runner
    from poise.ui import UI

    return Runner(store, UI(quiet=True))


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run ``poise ARGS`` in-process in a temporary working directory; returns (exit code, stdout, stderr)."""
    from poise import cli as cli_mod

    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_mod.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server on 127.0.0.1 for this test session (see tests/pg.py); fails, never skips,
    when PostgreSQL is not installed."""
    from .pg import PgServer

    try:
        server = PgServer()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a fresh, empty PostgreSQL database."""
    return pg_server.new_database()


def resume_matches(runner, store, full, atol: float = 0.0) -> None:
    """The failed run named ``crashy`` resumes to done with the same ``model`` weights as ``full``."""
    crashed = next(r for r in store.list_runs() if r.name == "crashy")
    assert crashed.status == "failed"
    resumed = runner.resume(crashed.id)
    assert resumed.status == "done"
    a, _ = store.load_tensors(full.id, "model")
    b, _ = store.load_tensors(resumed.id, "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list:
    """Refuse (and record) every connection or DNS lookup beyond the loopback address during the test."""
    import socket

    attempts: list = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def local(host: object) -> bool:
        return not isinstance(host, str) or host in ("localhost", "::1") or host.startswith("127.")

    def connect(self, address):  # noqa: ANN001
        if not local(address[0] if isinstance(address, tuple) else address):
            attempts.append(address)
            raise OSError(f"network access in a test: {address!r}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
        if not local(host):
            attempts.append(host)
            raise OSError(f"network access in a test: {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts
