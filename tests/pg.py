"""A throwaway PostgreSQL server for tests: initdb into a temporary folder, pg_ctl on 127.0.0.1 at a free
port, stopped and deleted after. As root it runs as a non-root OS user (``postgres`` when the Debian
package made one, else ``nobody``), since PostgreSQL refuses to run as root. Missing binaries fail the
test with the command that installs them: these tests never skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

INSTALL = "run `make system-deps` (or: apt-get install postgresql)"


def pg_bindir() -> Path | None:
    """Folder of initdb/pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL server; :meth:`new_database` gives each test its own empty database."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {INSTALL}")
        self.bindir = bindir
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
        self.base = Path(tempfile.mkdtemp(prefix="poise-pg-"))
        self.data = self.base / "data"
        if self.user is not None:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "poise", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-t", "60", "-o", opts, "start")
        self.admin_url = f"postgresql+psycopg://poise@127.0.0.1:{self.port}/postgres"

    def _run(self, exe: str, *args: str) -> None:
        kw = ({"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
              if self.user is not None else {})
        out = subprocess.run([str(self.bindir / exe), *args], capture_output=True, text=True, timeout=120,
                             cwd=self.base, **kw)
        if out.returncode != 0:
            log = (self.base / "log").read_text() if (self.base / "log").exists() else ""
            raise RuntimeError(f"{exe} failed ({out.returncode}): {out.stderr.strip()} {log[-2000:]}")

    def new_database(self) -> str:
        """A fresh empty database; its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=poise dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://poise@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        finally:
            for _ in range(5):
                try:
                    shutil.rmtree(self.base)
                    break
                except OSError:
                    time.sleep(0.2)
