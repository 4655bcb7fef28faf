"""The run store: runs, metrics, artifacts, costs and checkpoints.

Records live in SQLite (WAL mode, immediate write transactions, retried on lock) through SQLAlchemy
Core, so a ``postgresql://`` URL works with the same code. Files (artifacts as safetensors,
checkpoints) live under the store's folder, ``.poise/`` by default; artifacts are content-addressed by
SHA-256. Every write is atomic (temporary file, then rename), so a killed process never leaves a
half-written record or file behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from poise.errors import CorruptArtifact, UserError

DEFAULT_ROOT = Path(".poise")
STATUSES = ("running", "done", "failed", "interrupted", "pruned")

metadata = sa.MetaData()
CONFIG_COLUMN_CHARS = 16  # a config field longer than this stays only in the config text

runs_t = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False, index=True),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("quick", sa.Boolean, nullable=False, default=False),
    sa.Column("source", sa.Text),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("parent_id", sa.String(32)),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("ended", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("heartbeat", sa.Float),  # the owner's last sign of life (a lease: stale after STALE_S)
    sa.Column("study", sa.String(255)),  # the sweep study a trial run belongs to (schema 3)
    # the config's top-level eval_split when it is a string ("val": a tuning run), kept out of the JSON so
    # that leaving tuning runs out of a frontier parses no config (schema 4); see CONFIG_COLUMNS
    sa.Column("eval_split", sa.String(CONFIG_COLUMN_CHARS)),
)
# the queries of `runs ls`, `frontier` and the report: newest first, by status, by study, children of a run
RUN_INDEXES = (
    sa.Index("ix_runs_started", runs_t.c.started),
    sa.Index("ix_runs_status_started", runs_t.c.status, runs_t.c.started),
    sa.Index("ix_runs_kind", runs_t.c.kind),
    sa.Index("ix_runs_study", runs_t.c.study),
    sa.Index("ix_runs_parent_id", runs_t.c.parent_id),
    sa.Index("ix_runs_eval_split", runs_t.c.eval_split),
)
# top-level config fields with a column of their own, filled when the field's value is a string of at most
# CONFIG_COLUMN_CHARS characters (NULL otherwise: then the config text itself is the reference)
CONFIG_COLUMNS = ("eval_split",)

metrics_t = sa.Table(
    "metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("axis", sa.String(16), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("value", sa.Float),  # NULL is NaN (SQL has no NaN); infinities are stored as such
    sa.Column("ts", sa.Float, nullable=False),
    sa.UniqueConstraint("run_id", "name", "step", name="uq_metric"),
)

# each run's metrics at their last logged step, kept with every metrics write (schema 3): reading a run's
# final values never scans its training log
finals_t = sa.Table(
    "final_metrics",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("axis", sa.String(16), nullable=False),
    sa.Column("direction", sa.String(3), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Index("ix_final_metrics_name", "name"),
)

artifacts_t = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("media", sa.String(64), nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.UniqueConstraint("run_id", "name", name="uq_artifact"),
)

costs_t = sa.Table(
    "costs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True),
    sa.Column("wall_s", sa.Float, nullable=False),
    sa.Column("cpu_s", sa.Float, nullable=False),
    sa.Column("peak_rss_mb", sa.Float, nullable=False),
    sa.Column("energy_kwh", sa.Float, nullable=False),
    sa.Column("co2_g", sa.Float, nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("country", sa.String(8)),
    sa.Column("device", sa.String(64)),
    sa.Column("updated", sa.Float, nullable=False),
)

# time and energy per phase of each run segment (see poise.phases): energies in kWh with PUE, CO2 in g
phase_costs_t = sa.Table(
    "phase_costs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("segment", sa.Integer, primary_key=True),
    sa.Column("phase", sa.String(64), primary_key=True),
    sa.Column("wall_s", sa.Float, nullable=False),
    sa.Column("cpu_s", sa.Float, nullable=False),
    sa.Column("cpu_kwh", sa.Float, nullable=False),
    sa.Column("ram_kwh", sa.Float, nullable=False),
    sa.Column("gpu_kwh", sa.Float, nullable=False),
    sa.Column("co2_g", sa.Float, nullable=False),
    sa.Column("label", sa.String(32), nullable=False),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)


schema_t = sa.Table(
    "poise_schema",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
)

SCHEMA_VERSION = 4
HEARTBEAT_S = 20.0  # a running process refreshes its runs' heartbeat this often
STALE_S = 120.0  # a run whose owner has not been heard from for this long may be claimed by another


@dataclass
class RunRecord:
    id: str
    kind: str
    name: str
    status: str
    config: dict[str, Any]
    config_hash: str
    seed: int
    quick: bool
    source: str | None
    git_commit: str | None
    host: str | None
    pid: int | None
    parent_id: str | None
    started: float
    ended: float | None
    error: str | None
    heartbeat: float | None = None
    study: str | None = None
    eval_split: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


@dataclass
class RunSummary:
    """A run as listings show it: the light columns, its config parsed only when asked for."""

    id: str
    name: str
    kind: str
    status: str
    seed: int
    quick: bool
    started: float
    ended: float | None
    study: str | None
    parent_id: str | None
    eval_split: str | None = None
    config_text: str | None = field(default=None, repr=False)
    _config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = json.loads(self.config_text) if self.config_text else {}
        return self._config

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


SUMMARY_COLUMNS = ("id", "name", "kind", "status", "seed", "quick", "started", "ended", "study", "parent_id",
                   "eval_split")


def config_columns(config: dict[str, Any]) -> dict[str, str | None]:
    """The values of a run's :data:`CONFIG_COLUMNS` for this config."""
    return {k: v if isinstance(v := config.get(k), str) and len(v) <= CONFIG_COLUMN_CHARS else None
            for k in CONFIG_COLUMNS}


@dataclass
class CostRecord:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    energy_kwh: float = 0.0
    co2_g: float = 0.0
    method: str = ""
    country: str | None = None
    device: str | None = None
    segments: int = 0
    phases: list[Any] = field(default_factory=list, repr=False)  # poise.phases.PhaseCost rows of a segment

    def as_metrics(self) -> dict[str, float]:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "peak_rss_mb": self.peak_rss_mb,
                "energy_kwh": self.energy_kwh, "co2_g": self.co2_g}


@dataclass
class ArtifactRecord:
    run_id: str
    name: str
    sha256: str
    path: Path
    media: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class MetricRow:
    run_id: str
    name: str
    axis: str
    direction: str
    step: int
    value: float

    @property
    def key(self) -> str:
        return f"{self.axis}.{self.name}"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` through psycopg 3 when psycopg2 (SQLAlchemy's default driver) is not installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def display_url(url: str) -> str:
    """A database URL for messages: the password hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return url


def glob_to_like(pattern: str) -> str:
    """A shell glob (``*``, ``?``) as a SQL LIKE pattern with ``\\`` as escape: ``%`` and ``_`` match themselves."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def verified_bytes(rec: ArtifactRecord, run_id: str) -> bytes:
    """An artifact's bytes, checked against the SHA-256 the store recorded (``CorruptArtifact`` if not)."""
    try:
        data = rec.path.read_bytes()
    except OSError as e:
        raise CorruptArtifact(f"artifact {rec.name!r} cannot be read: {e.strerror or e}",
                              where=f"run {run_id}") from None
    if hashlib.sha256(data).hexdigest() != rec.sha256:
        raise CorruptArtifact(f"artifact {rec.name!r} is corrupt (SHA-256 mismatch): {rec.path}",
                              where=f"run {run_id}")
    return data


def verified_json(rec: ArtifactRecord, run_id: str) -> Any:
    """A JSON artifact, checked against its SHA-256."""
    try:
        return json.loads(verified_bytes(rec, run_id))
    except ValueError:
        raise CorruptArtifact(f"artifact {rec.name!r} is not valid JSON", where=f"run {run_id}") from None


class Store:
    """Handle on one store: a database URL plus a folder for files."""

    def __init__(self, url: str | None = None, root: str | Path | None = None):
        url = url or os.environ.get("POISE_STORE")
        if url is None:
            self.root = Path(root) if root else DEFAULT_ROOT
            self.root.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{self.root / 'poise.db'}"
        elif url.startswith("sqlite:///"):
            db = Path(url.removeprefix("sqlite:///"))
            self.root = Path(root) if root else db.parent
            self.root.mkdir(parents=True, exist_ok=True)
        else:
            self.root = Path(root or os.environ.get("POISE_HOME", DEFAULT_ROOT))
            self.root.mkdir(parents=True, exist_ok=True)
        self.url = url
        try:
            self.engine = self._make_engine(sqlalchemy_url(url))
            self._with_retry(self._open_schema)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as e:
            raise UserError(f"cannot use store URL: {e}", where="--store") from None
        except OperationalError as e:
            raise UserError(f"cannot open store: {e.orig}", where=display_url(self.url)) from None
        except sa.exc.DatabaseError as e:  # e.g. "file is not a database"
            raise UserError(f"not a poise store ({e.orig}); expected an SQLite file poise created, or a new path",
                            where=url.removeprefix("sqlite:///")) from None

    # ------------------------------------------------------------------ schema

    def _open_schema(self) -> None:
        """Create the tables of a new store, or bring an older store's schema up to date (once, under a
        write lock, so that processes opening it together don't race)."""
        existed = sa.inspect(self.engine).has_table("runs")
        self._create_tables()
        q = sa.select(schema_t.c.value).where(schema_t.c.key == "version")
        with self.engine.connect() as c:
            row = c.execute(q).first()
        if row is not None and int(row[0]) == SCHEMA_VERSION:
            return
        with self._tx() as c:
            row = c.execute(q).first()
            version = int(row[0]) if row else (1 if existed else SCHEMA_VERSION)
            if version == SCHEMA_VERSION and row is not None:
                return
            if version > SCHEMA_VERSION:
                raise UserError(f"this store was written by a newer poise (schema {version}); expected schema "
                                f"{SCHEMA_VERSION} or older", where=self.url)
            if version < 2:
                self._migrate_1_to_2(c)
            if version < 3:
                self._migrate_2_to_3(c)
            if version < 4:
                self._migrate_3_to_4(c)
            stmt, rows = self._upsert(schema_t, [{"key": "version", "value": str(SCHEMA_VERSION)}], ["key"])
            c.execute(stmt, rows)

    def _create_tables(self) -> None:
        if self.engine.dialect.name != "postgresql":
            metadata.create_all(self.engine)
            return
        with self.engine.begin() as conn:  # concurrent CREATE TABLEs race in PostgreSQL's catalog: one at a time
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7290417)"))
            metadata.create_all(conn)

    def _migrate_1_to_2(self, c: sa.Connection) -> None:
        """Runs gain a heartbeat (leases); a metric value may be NULL (NaN)."""
        cols = {col["name"] for col in sa.inspect(c).get_columns("runs")}
        if "heartbeat" not in cols:
            c.exec_driver_sql("ALTER TABLE runs ADD COLUMN heartbeat FLOAT")
        if self.engine.dialect.name == "postgresql":
            c.exec_driver_sql("ALTER TABLE metrics ALTER COLUMN value DROP NOT NULL")
            return
        # SQLite cannot drop a NOT NULL: rebuild the table with the current definition
        c.exec_driver_sql("ALTER TABLE metrics RENAME TO metrics_v1")
        c.exec_driver_sql("DROP INDEX IF EXISTS ix_metrics_run_id")
        metrics_t.create(c)
        names = ", ".join(col.name for col in metrics_t.columns)
        c.exec_driver_sql(f"INSERT INTO metrics ({names}) SELECT {names} FROM metrics_v1")
        c.exec_driver_sql("DROP TABLE metrics_v1")

    def _migrate_2_to_3(self, c: sa.Connection) -> None:
        """Runs gain a study column and indexes; each run's final metrics are kept in ``final_metrics``
        (filled here from the metric log: the row of each run and name with the highest step)."""
        cols = {col["name"] for col in sa.inspect(c).get_columns("runs")}
        if "study" not in cols:
            c.exec_driver_sql("ALTER TABLE runs ADD COLUMN study VARCHAR(255)")
            cols.add("study")
        for ix in RUN_INDEXES:  # an index on a column of a later schema comes with that column
            if all(col.name in cols for col in ix.columns):
                ix.create(c, checkfirst=True)
        finals_t.create(c, checkfirst=True)
        c.execute(finals_t.delete())
        m = metrics_t.alias("m")
        last = (sa.select(metrics_t.c.run_id, metrics_t.c.name, sa.func.max(metrics_t.c.step).label("step"))
                .group_by(metrics_t.c.run_id, metrics_t.c.name).subquery("last"))
        cols3 = [m.c.run_id, m.c.name, m.c.axis, m.c.direction, m.c.step, m.c.value, m.c.ts]
        sel = sa.select(*cols3).join(last, sa.and_(m.c.run_id == last.c.run_id, m.c.name == last.c.name,
                                                   m.c.step == last.c.step))
        c.execute(finals_t.insert().from_select([col.name for col in cols3], sel))

    def _migrate_3_to_4(self, c: sa.Connection) -> None:
        """Runs gain the :data:`CONFIG_COLUMNS` (eval_split), filled from each run's config, and their index.
        Only configs that mention a field are parsed, a few thousand at a time (memory stays flat)."""
        cols = {col["name"] for col in sa.inspect(c).get_columns("runs")}
        for k in CONFIG_COLUMNS:
            if k not in cols:
                c.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {k} VARCHAR({CONFIG_COLUMN_CHARS})")
        for ix in RUN_INDEXES:
            ix.create(c, checkfirst=True)
        mentions = sa.or_(*[runs_t.c.config.contains(f'"{k}"', autoescape=True) for k in CONFIG_COLUMNS])
        last = ""
        while True:
            rows = c.execute(sa.select(runs_t.c.id, runs_t.c.config).where(mentions, runs_t.c.id > last)
                             .order_by(runs_t.c.id).limit(2000)).fetchall()
            if not rows:
                return
            updates = []
            for rid, text in rows:
                try:
                    config = json.loads(text)
                except ValueError:
                    continue
                values = config_columns(config) if isinstance(config, dict) else {}
                if any(v is not None for v in values.values()):
                    updates.append({"rid": rid, **{f"v_{k}": v for k, v in values.items()}})
            if updates:
                c.execute(runs_t.update().where(runs_t.c.id == sa.bindparam("rid"))
                          .values({k: sa.bindparam(f"v_{k}") for k in CONFIG_COLUMNS}), updates)
            last = rows[-1][0]

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _make_engine(url: str) -> sa.Engine:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=20")  # short waits in SQLite, jittered retries in _with_retry
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Any) -> None:
                # writers take the lock up front (no read-to-write upgrade deadlocks); readers don't block
                write = conn.get_execution_options().get("poise_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

            return engine
        return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})

    @staticmethod
    def _with_retry(fn: Any, timeout: float = 120.0) -> Any:
        """Retry on a locked database with short jittered sleeps (SQLite's own busy handler sleeps coarsely)."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                return fn()
            except OperationalError as e:
                text = str(e).lower()
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.05)

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self.engine.connect().execution_options(poise_write=True) as conn, conn.begin():
            yield conn

    def _write(self, fn: Any) -> Any:
        def attempt() -> Any:
            with self._tx() as conn:
                return fn(conn)

        return self._with_retry(attempt)

    def _read(self, fn: Any) -> Any:
        def attempt() -> Any:
            with self.engine.connect() as conn:
                return fn(conn)

        return self._with_retry(attempt)

    def _upsert(self, table: sa.Table, rows: list[dict[str, Any]], keys: list[str], where: Any = None) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover - other databases are not supported
            raise UserError(f"unsupported database {dialect!r}; expected sqlite or postgresql", where=self.url)
        stmt = insert(table)
        update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys and c.name != "id"}
        return stmt.on_conflict_do_update(index_elements=keys, set_=update,
                                          where=where(stmt) if where is not None else None), rows

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        *,
        kind: str,
        name: str,
        config: dict[str, Any],
        config_hash: str,
        seed: int,
        quick: bool = False,
        source: str | None = None,
        parent_id: str | None = None,
    ) -> str:
        run_id = uuid.uuid4().hex[:12]
        row = dict(
            id=run_id, kind=kind, name=name, status="running", config=json.dumps(config, sort_keys=True),
            config_hash=config_hash, seed=seed, quick=quick, source=source, git_commit=_git_commit(),
            host=socket.gethostname(), pid=os.getpid(), parent_id=parent_id, started=time.time(),
            ended=None, error=None, heartbeat=time.time(), **config_columns(config),
        )
        self._write(lambda c: c.execute(runs_t.insert().values(**row)))
        return run_id

    def claim(self, run_id: str, *, dead_pid: int | None = None) -> bool:
        """Take ownership of a run to continue it: atomically mark it running by this process, but only if
        nobody holds it (not running, or its owner's heartbeat is older than ``STALE_S``, or — with
        ``dead_pid`` — its owner on this host is that process, known dead). True when this process won."""
        now = time.time()
        free = sa.or_(runs_t.c.status != "running", runs_t.c.heartbeat.is_(None),
                      runs_t.c.heartbeat < now - STALE_S)
        if dead_pid is not None:
            free = sa.or_(free, sa.and_(runs_t.c.pid == dead_pid, runs_t.c.host == socket.gethostname()))
        stmt = (runs_t.update().where(runs_t.c.id == run_id, free)
                .values(status="running", pid=os.getpid(), host=socket.gethostname(), heartbeat=now, ended=None,
                        error=None))
        return bool(self._write(lambda c: c.execute(stmt).rowcount))

    def beat(self, run_ids: Iterable[str]) -> None:
        """Refresh the heartbeat of runs this process owns (a lease renewal)."""
        ids = list(run_ids)
        if ids:
            stmt = (runs_t.update().where(runs_t.c.id.in_(ids), runs_t.c.pid == os.getpid(),
                                          runs_t.c.host == socket.gethostname(), runs_t.c.status == "running")
                    .values(heartbeat=time.time()))
            self._write(lambda c: c.execute(stmt))

    def set_study(self, run_id: str, study: str) -> None:
        """Mark a run as a trial of sweep study ``study`` (``runs ls --study``, ``report --study``)."""
        self._write(lambda c: c.execute(runs_t.update().where(runs_t.c.id == run_id).values(study=study)))

    def set_status(self, run_id: str, status: str, *, error: str | None = None) -> None:
        assert status in STATUSES, status
        values: dict[str, Any] = {"status": status, "error": error}
        values["ended"] = None if status == "running" else time.time()
        if status == "running":
            values.update(pid=os.getpid(), host=socket.gethostname())
        self._write(lambda c: c.execute(runs_t.update().where(runs_t.c.id == run_id).values(**values)))

    @staticmethod
    def _to_run(row: Any) -> RunRecord:
        d = dict(row._mapping)
        d["config"] = json.loads(d["config"])
        d["quick"] = bool(d["quick"])
        return RunRecord(**d)

    def get_run(self, run_id: str) -> RunRecord:
        """A run by full ID or unique prefix (at least 4 characters)."""
        rid = run_id.removeprefix("run:")
        if len(rid) < 4:
            raise UserError(f"run ID {run_id!r} is too short; expected at least 4 characters", where="run")
        # a prefix, matched literally: "%" and "_" in it are not wildcards
        q = runs_t.select().where(runs_t.c.id.startswith(rid, autoescape=True)).limit(2)
        rows = self._read(lambda c: c.execute(q).fetchall())
        if not rows:
            raise UserError(f"no run {run_id!r} in store {self.url}", where="run")
        if len(rows) > 1:
            raise UserError(f"run ID prefix {run_id!r} is ambiguous ({len(rows)} runs)", where="run")
        return self._to_run(rows[0])

    def list_runs(self, *, kind: str | None = None, status: str | None = None) -> list[RunRecord]:
        q = runs_t.select().order_by(runs_t.c.started)
        if kind:
            q = q.where(runs_t.c.kind.like(glob_to_like(kind), escape="\\"))
        if status:
            q = q.where(runs_t.c.status == status)
        return [self._to_run(r) for r in self._read(lambda c: c.execute(q).fetchall())]

    @staticmethod
    def _where_runs(q: Any, *, kind: str | None = None, name: str | None = None, status: str | None = None,
                    study: str | None = None, since: float | None = None) -> Any:
        """Listing filters done in SQL: kind and name as globs, status, study, started at or after ``since``."""
        if kind:
            q = q.where(runs_t.c.kind.like(glob_to_like(kind), escape="\\"))
        if name:
            q = q.where(runs_t.c.name.like(glob_to_like(name), escape="\\"))
        if status:
            q = q.where(runs_t.c.status == status)
        if study:
            q = q.where(runs_t.c.study == study)
        if since is not None:
            q = q.where(runs_t.c.started >= since)
        return q

    def count_runs(self, **filters: Any) -> int:
        """How many runs match the listing filters of :meth:`iter_runs` (one COUNT query)."""
        q = self._where_runs(sa.select(sa.func.count()).select_from(runs_t), **filters)
        return int(self._read(lambda c: c.execute(q).scalar()) or 0)

    @staticmethod
    def _config_text(config_keys: Sequence[str] | None) -> Any:
        """The config column, or with ``config_keys`` (dotted paths) the config text only of runs where it
        is needed to read one of those fields: it names the field's last key, and (a field with a column of
        its own) that column is empty. Other runs get NULL (their fields are absent, or in the column)."""
        if not config_keys:
            return runs_t.c.config
        needed = []
        for path in dict.fromkeys(config_keys):
            mentions = runs_t.c.config.contains(f'"{path.rsplit(".", 1)[-1]}"', autoescape=True)
            needed.append(sa.and_(runs_t.c[path].is_(None), mentions) if path in CONFIG_COLUMNS else mentions)
        return sa.case((sa.or_(*needed), runs_t.c.config), else_=sa.null())

    @staticmethod
    def _summary(r: Any, with_config: bool) -> RunSummary:
        return RunSummary(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8], r[9], r[10],
                          r[11] if with_config else None)

    def iter_runs(self, *, newest_first: bool = False, limit: int | None = None, with_config: bool = False,
                  config_keys: Sequence[str] | None = None, batch: int = 2000,
                  **filters: Any) -> Iterator[RunSummary]:
        """Runs matching ``kind``/``name`` (globs), ``status``, ``study``, ``since`` (epoch seconds), by start
        time, read ``batch`` at a time (keyset pages: no connection is held while the caller works, and
        memory stays flat however many runs the store holds). Only the listing columns are read, plus
        the config text with ``with_config`` (parsed on first use of ``.config``; with ``config_keys``, only
        where those config fields need it, see :meth:`_config_text`)."""
        cols = [runs_t.c[k] for k in SUMMARY_COLUMNS] + ([self._config_text(config_keys)] if with_config else [])
        started, rid = runs_t.c.started, runs_t.c.id
        order = [started.desc(), rid.desc()] if newest_first else [started, rid]
        last: tuple[float, str] | None = None
        left = limit
        while left is None or left > 0:
            q = self._where_runs(sa.select(*cols), **filters).order_by(*order)
            if last is not None:
                if newest_first:
                    q = q.where(sa.or_(started < last[0], sa.and_(started == last[0], rid < last[1])))
                else:
                    q = q.where(sa.or_(started > last[0], sa.and_(started == last[0], rid > last[1])))
            n = batch if left is None else min(batch, left)
            rows = self._read(lambda c, q=q, n=n: c.execute(q.limit(n)).fetchall())
            for r in rows:
                yield self._summary(r, with_config)
            if len(rows) < n:
                return
            last = (rows[-1][6], rows[-1][0])
            if left is not None:
                left -= len(rows)

    def runs_by_id(self, ids: Iterable[str], *, status: str | None = None, with_config: bool = False,
                   config_keys: Sequence[str] | None = None) -> list[RunSummary]:
        """The listing view of these runs (in start order), read in chunks of IN queries. With
        ``config_keys`` (dotted config paths), a run's config text is read only where one of those fields
        needs it (see :meth:`_config_text`)."""
        ids = list(ids)
        cols = [runs_t.c[k] for k in SUMMARY_COLUMNS] + ([self._config_text(config_keys)] if with_config else [])
        out: list[RunSummary] = []
        for i in range(0, len(ids), 5000):
            q = sa.select(*cols).where(runs_t.c.id.in_(ids[i:i + 5000]))
            if status:
                q = q.where(runs_t.c.status == status)
            for r in self._read(lambda c, q=q: c.execute(q).fetchall()):
                out.append(self._summary(r, with_config))
        return sorted(out, key=lambda r: (r.started, r.id))

    def runs_full(self, ids: Iterable[str]) -> list[RunRecord]:
        """Whole records of these runs (config parsed), in start order, read in chunks."""
        ids = list(ids)
        out: list[RunRecord] = []
        for i in range(0, len(ids), 5000):
            q = runs_t.select().where(runs_t.c.id.in_(ids[i:i + 5000]))
            out += [self._to_run(r) for r in self._read(lambda c, q=q: c.execute(q).fetchall())]
        return sorted(out, key=lambda r: (r.started, r.id))

    def _by_run(self, table: sa.Table, ids: list[str]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for i in range(0, len(ids), 5000):
            q = table.select().where(table.c.run_id.in_(ids[i:i + 5000]))
            for r in self._read(lambda c, q=q: c.execute(q).fetchall()):
                out.setdefault(r.run_id, []).append(r)
        return out

    def costs_of(self, run_ids: Iterable[str]) -> dict[str, CostRecord]:
        """:meth:`cost` of many runs in a few queries (runs without a cost get an empty record)."""
        ids = list(run_ids)
        rows = self._by_run(costs_t, ids)
        return {rid: self._total_cost(rows.get(rid, [])) for rid in ids}

    def artifacts_of(self, run_ids: Iterable[str]) -> dict[str, list[ArtifactRecord]]:
        """:meth:`artifacts` of many runs in a few queries."""
        ids = list(run_ids)
        rows = self._by_run(artifacts_t, ids)
        return {rid: [ArtifactRecord(r.run_id, r.name, r.sha256, self.artifacts_dir / r.path, r.media,
                                     json.loads(r.meta)) for r in sorted(rows.get(rid, []), key=lambda r: r.created)]
                for rid in ids}

    def phase_costs_of(self, run_ids: Iterable[str]) -> dict[str, list[Any]]:
        """:meth:`phase_costs` of many runs in a few queries."""
        from poise.phases import PhaseCost, combine

        ids = list(run_ids)
        rows = self._by_run(phase_costs_t, ids)
        return {rid: combine(PhaseCost(r.phase, r.wall_s, r.cpu_s, r.cpu_kwh, r.ram_kwh, r.gpu_kwh, r.co2_g,
                                       r.label, r.method) for r in rows.get(rid, [])) for rid in ids}

    def metric_keys(self) -> list[str]:
        """Every ``axis.name`` some run has a final value of, sorted."""
        q = sa.select(finals_t.c.axis, finals_t.c.name).distinct()
        return sorted({f"{a}.{n}" for a, n in self._read(lambda c: c.execute(q).fetchall())})

    def find_done(self, config_hash: str, *, eval_split: str | None = None) -> RunRecord | None:
        """The newest finished run that trained exactly this config (for reuse of shared artifacts); with
        ``eval_split``, only one whose evaluators scored that split (a tuning run scored ``val``)."""
        q = (runs_t.select().where(runs_t.c.config_hash == config_hash, runs_t.c.status == "done")
             .order_by(runs_t.c.ended.desc()))
        if eval_split is None:
            row = self._read(lambda c: c.execute(q.limit(1)).first())
            return self._to_run(row) if row else None
        for row in self._read(lambda c: c.execute(q).fetchall()):
            rec = self._to_run(row)
            if rec.config.get("eval_split", "test") == eval_split:
                return rec
        return None

    def find_unfinished(self, config_hash: str) -> RunRecord | None:
        q = (runs_t.select().where(runs_t.c.config_hash == config_hash, runs_t.c.status != "done")
             .order_by(runs_t.c.started.desc()).limit(1))
        row = self._read(lambda c: c.execute(q).first())
        return self._to_run(row) if row else None

    def delete_run(self, run_id: str) -> None:
        run = self.get_run(run_id)

        def delete(c: sa.Connection) -> None:
            for t in (metrics_t, finals_t, artifacts_t, costs_t, phase_costs_t):
                c.execute(t.delete().where(t.c.run_id == run.id))
            c.execute(runs_t.delete().where(runs_t.c.id == run.id))

        self._write(delete)
        shutil.rmtree(self.checkpoint_dir(run.id), ignore_errors=True)
        self.gc_artifacts()

    # ------------------------------------------------------------------ metrics

    def log_metrics(self, run_id: str, rows: Iterable[tuple[str, str, str, int, float]]) -> None:
        """Write ``(name, axis, direction, step, value)`` rows; a repeated (run, name, step) replaces the old value.

        One transaction writes the rows and updates the run's final metrics (a name's row at its highest
        step), so the two never disagree, whoever else writes at the same time."""
        now = time.time()
        data = [dict(run_id=run_id, name=n, axis=a, direction=d, step=int(s),
                     value=None if math.isnan(float(v)) else float(v), ts=now)
                for n, a, d, s, v in rows]
        if not data:
            return
        last: dict[str, dict[str, Any]] = {}
        for row in data:  # the batch's last row per name at its highest step
            cur = last.get(row["name"])
            if cur is None or row["step"] >= cur["step"]:
                last[row["name"]] = row
        stmt, data = self._upsert(metrics_t, data, ["run_id", "name", "step"])
        fstmt, frows = self._upsert(finals_t, list(last.values()), ["run_id", "name"],
                                    where=lambda ins: finals_t.c.step <= ins.excluded.step)

        def write(c: sa.Connection) -> None:
            c.execute(stmt, data)
            c.execute(fstmt, frows)

        self._write(write)

    def metrics(self, run_ids: Iterable[str] | None = None, *, name: str | None = None) -> list[MetricRow]:
        q = sa.select(metrics_t.c.run_id, metrics_t.c.name, metrics_t.c.axis, metrics_t.c.direction,
                      metrics_t.c.step, metrics_t.c.value).order_by(metrics_t.c.run_id, metrics_t.c.step)
        if run_ids is not None:
            q = q.where(metrics_t.c.run_id.in_(list(run_ids)))
        if name is not None:
            q = q.where(metrics_t.c.name == name)
        rows = self._read(lambda c: c.execute(q).fetchall())
        return [MetricRow(*r[:5], math.nan if r[5] is None else r[5]) for r in rows]

    def metric_series(self, run_id: str, name: str, *, max_points: int | None = None) -> list[MetricRow]:
        """One metric of one run by step; with ``max_points``, at most about that many rows, evenly spaced in
        step (the first and last kept) -- for plotting a long training log (the store keeps every row)."""
        base = sa.select(metrics_t.c.run_id, metrics_t.c.name, metrics_t.c.axis, metrics_t.c.direction,
                         metrics_t.c.step, metrics_t.c.value).where(metrics_t.c.run_id == run_id,
                                                                     metrics_t.c.name == name)
        if max_points is not None:
            n = self._read(lambda c: c.execute(sa.select(sa.func.count()).select_from(base.subquery())).scalar())
            if n > max_points:
                stride = -(-n // max_points)
                rn = sa.func.row_number().over(order_by=metrics_t.c.step).label("rn")
                sub = base.add_columns(rn).subquery()
                base = (sa.select(*[sub.c[k] for k in ("run_id", "name", "axis", "direction", "step", "value")])
                        .where(sa.or_((sub.c.rn - 1) % stride == 0, sub.c.rn == n)))
                rows = self._read(lambda c: c.execute(base.order_by(sub.c.step)).fetchall())
                return [MetricRow(*r[:5], math.nan if r[5] is None else r[5]) for r in rows]
        rows = self._read(lambda c: c.execute(base.order_by(metrics_t.c.step)).fetchall())
        return [MetricRow(*r[:5], math.nan if r[5] is None else r[5]) for r in rows]

    def final_metrics(self, run_ids: Iterable[str] | None = None, *, names: Iterable[str] | None = None
                      ) -> dict[str, dict[str, MetricRow]]:
        """For each run, each metric's value at its last logged step, keyed ``axis.name`` (read from the
        final-metrics table, never from the whole log). ``names`` (``axis.name`` keys) reads only those."""
        q = sa.select(finals_t.c.run_id, finals_t.c.name, finals_t.c.axis, finals_t.c.direction, finals_t.c.step,
                      finals_t.c.value)
        if names is not None:
            wanted = list(dict.fromkeys(names))
            q = q.where(finals_t.c.name.in_([k.split(".", 1)[-1] for k in wanted]))
            keep = set(wanted)
        else:
            keep = None
        out: dict[str, dict[str, MetricRow]] = {}

        def read(c: sa.Connection) -> None:
            out.clear()
            if run_ids is None:
                chunks: list[Any] = [q]
            else:
                ids = list(run_ids)
                chunks = [q.where(finals_t.c.run_id.in_(ids[i:i + 5000])) for i in range(0, len(ids), 5000)]
            for qq in chunks:
                for r in c.execute(qq):
                    row = MetricRow(*r[:5], math.nan if r[5] is None else r[5])
                    if keep is None or row.key in keep:
                        out.setdefault(row.run_id, {})[row.key] = row

        self._read(read)
        return out

    # ------------------------------------------------------------------ costs

    def record_cost(self, run_id: str, segment: int, cost: CostRecord) -> None:
        row = dict(run_id=run_id, segment=segment, wall_s=cost.wall_s, cpu_s=cost.cpu_s,
                   peak_rss_mb=cost.peak_rss_mb, energy_kwh=cost.energy_kwh, co2_g=cost.co2_g,
                   method=cost.method, country=cost.country, device=cost.device, updated=time.time())
        stmt, rows = self._upsert(costs_t, [row], ["run_id", "segment"])
        self._write(lambda c: c.execute(stmt, rows))
        if cost.phases:
            self.record_phases(run_id, segment, cost.phases)

    def record_phases(self, run_id: str, segment: int, phases: list[Any]) -> None:
        """Write a segment's time and energy per phase (``poise.phases.PhaseCost`` rows), replacing older ones."""
        now = time.time()
        data = [dict(run_id=run_id, segment=segment, phase=p.phase, wall_s=p.wall_s, cpu_s=p.cpu_s,
                     cpu_kwh=p.cpu_kwh, ram_kwh=p.ram_kwh, gpu_kwh=p.gpu_kwh, co2_g=p.co2_g, label=p.label,
                     method=p.method, updated=now) for p in phases]
        stmt, data = self._upsert(phase_costs_t, data, ["run_id", "segment", "phase"])
        self._write(lambda c: c.execute(stmt, data))

    def phase_costs(self, run_id: str) -> list[Any]:
        """A run's time and energy per phase, summed over its segments (``other`` last)."""
        from poise.phases import PhaseCost, combine

        q = phase_costs_t.select().where(phase_costs_t.c.run_id == run_id)
        rows = self._read(lambda c: c.execute(q).fetchall())
        return combine(PhaseCost(r.phase, r.wall_s, r.cpu_s, r.cpu_kwh, r.ram_kwh, r.gpu_kwh, r.co2_g, r.label,
                                 r.method) for r in rows)

    def next_segment(self, run_id: str) -> int:
        q = sa.select(sa.func.max(costs_t.c.segment)).where(costs_t.c.run_id == run_id)
        cur = self._read(lambda c: c.execute(q).scalar())
        return 0 if cur is None else int(cur) + 1

    def cost(self, run_id: str) -> CostRecord:
        """A run's total cost over all its segments (a resumed run has several); peak memory is the max."""
        rows = self._read(lambda c: c.execute(costs_t.select().where(costs_t.c.run_id == run_id)).fetchall())
        return self._total_cost(rows)

    @staticmethod
    def _total_cost(rows: list[Any]) -> CostRecord:
        total = CostRecord()
        for r in rows:
            total.wall_s += r.wall_s
            total.cpu_s += r.cpu_s
            total.peak_rss_mb = max(total.peak_rss_mb, r.peak_rss_mb)
            total.energy_kwh += r.energy_kwh
            total.co2_g += r.co2_g
            total.method, total.country, total.device = r.method, r.country, r.device
            total.segments += 1
        return total

    # ------------------------------------------------------------------ artifacts and files

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def _put_blob(self, data: bytes, suffix: str) -> tuple[str, str]:
        sha = hashlib.sha256(data).hexdigest()
        rel = f"{sha[:2]}/{sha}{suffix}"
        path = self.artifacts_dir / rel
        if not path.exists():
            _atomic_write(path, data)
        return sha, rel

    def _record_artifact(self, run_id: str, name: str, sha: str, rel: str, media: str, meta: dict[str, Any]) -> None:
        row = dict(run_id=run_id, name=name, sha256=sha, path=rel, media=media,
                   meta=json.dumps(meta, sort_keys=True, default=str), created=time.time())
        stmt, rows = self._upsert(artifacts_t, [row], ["run_id", "name"])
        self._write(lambda c: c.execute(stmt, rows))

    def save_tensors(self, run_id: str, name: str, tensors: dict[str, Any], meta: dict[str, Any] | None = None
                     ) -> ArtifactRecord:
        """Save a state dict as a content-addressed safetensors artifact of ``run_id``."""
        from safetensors.torch import save

        from poise.statefile import untied

        meta = dict(meta or {})
        blob = save(untied(tensors), metadata={"poise": json.dumps(meta, sort_keys=True, default=str)})
        sha, rel = self._put_blob(blob, ".safetensors")
        self._record_artifact(run_id, name, sha, rel, "safetensors", meta)
        return ArtifactRecord(run_id, name, sha, self.artifacts_dir / rel, "safetensors", meta)

    def save_file(self, run_id: str, name: str, data: bytes, media: str, meta: dict[str, Any] | None = None
                  ) -> ArtifactRecord:
        """Save bytes (a PNG figure, a JSON table) as an artifact of ``run_id``."""
        suffix = {"image/png": ".png", "application/json": ".json", "text/plain": ".txt",
                  "application/jsonl": ".jsonl"}.get(media, ".bin")
        sha, rel = self._put_blob(data, suffix)
        self._record_artifact(run_id, name, sha, rel, media, meta or {})
        return ArtifactRecord(run_id, name, sha, self.artifacts_dir / rel, media, meta or {})

    def adopt_file(
        self, run_id: str, name: str, path: str | Path, media: str, meta: dict[str, Any] | None = None
    ) -> ArtifactRecord:
        """Record a file already written on disk (a merged model) as an artifact of ``run_id``.

        The file is hashed in chunks and moved into the content-addressed folder, never read whole into
        memory; it must be on the store's filesystem (write it under ``incoming_dir``).
        """
        path = Path(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
        sha = digest.hexdigest()
        suffix = {"safetensors": ".safetensors", "image/png": ".png", "application/json": ".json"}.get(media, ".bin")
        rel = f"{sha[:2]}/{sha}{suffix}"
        dest = self.artifacts_dir / rel
        if dest.exists():
            path.unlink()
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        self._record_artifact(run_id, name, sha, rel, media, meta or {})
        return ArtifactRecord(run_id, name, sha, dest, media, meta or {})

    @property
    def incoming_dir(self) -> Path:
        """Where to write a file that :meth:`adopt_file` will move into the store."""
        path = self.artifacts_dir / ".incoming"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifacts(self, run_id: str | None = None) -> list[ArtifactRecord]:
        q = artifacts_t.select().order_by(artifacts_t.c.created)
        if run_id is not None:
            q = q.where(artifacts_t.c.run_id == run_id)
        rows = self._read(lambda c: c.execute(q).fetchall())
        return [ArtifactRecord(r.run_id, r.name, r.sha256, self.artifacts_dir / r.path, r.media, json.loads(r.meta))
                for r in rows]

    def artifact(self, run_id: str, name: str) -> ArtifactRecord:
        for a in self.artifacts(run_id):
            if a.name == name:
                return a
        names = ", ".join(a.name for a in self.artifacts(run_id)) or "none"
        raise UserError(f"run {run_id} has no artifact {name!r}; it has: {names}", where="artifact")

    def read_bytes(self, run_id: str, name: str) -> bytes:
        """The bytes of artifact ``name`` of a run, checked against their SHA-256 (``CorruptArtifact`` if not)."""
        return verified_bytes(self.artifact(run_id, name), run_id)

    def read_json(self, run_id: str, name: str) -> Any:
        """A JSON artifact of a run, checked against its SHA-256."""
        return verified_json(self.artifact(run_id, name), run_id)

    def load_tensors(self, run_id: str, name: str, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        """Load a safetensors artifact (never pickle) and its metadata, checking its SHA-256."""
        from safetensors.torch import load

        rec = self.artifact(run_id, name)
        data = self.read_bytes(run_id, name)
        tensors = load(data)
        if device != "cpu":
            tensors = {k: v.to(device) for k, v in tensors.items()}
        return tensors, rec.meta

    def gc_artifacts(self) -> int:
        """Delete artifact files no record points to; returns how many were removed."""
        live = {a.path.resolve() for a in self.artifacts()}
        removed = 0
        if self.artifacts_dir.is_dir():
            for p in self.artifacts_dir.glob("*/*"):
                if p.resolve() not in live and not p.name.startswith("."):
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.root / "checkpoints" / run_id

    def save_checkpoint(self, run_id: str, step: int, tensors: dict[str, Any], skeleton: dict[str, Any],
                        keep: int = 2) -> Path:
        """Write ``ckpt-<step>/`` atomically (folder renamed into place), keeping the newest ``keep``."""
        from safetensors.torch import save_file

        from poise.statefile import untied

        base = self.checkpoint_dir(run_id)
        base.mkdir(parents=True, exist_ok=True)
        final = base / f"ckpt-{step:09d}"
        tmp = base / f".tmp-{step:09d}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        save_file(untied(tensors), str(tmp / "tensors.safetensors"))
        with open(tmp / "state.json", "w") as f:
            json.dump(skeleton, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(base.glob("ckpt-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in base.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return final

    def latest_checkpoint(self, run_id: str) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """``(step, tensors, skeleton)`` of the newest complete checkpoint, or None."""
        return next(self.checkpoints(run_id), None)

    def checkpoints(self, run_id: str) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
        """``(step, tensors, skeleton)`` of every readable checkpoint, newest first."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        base = self.checkpoint_dir(run_id)
        for path in sorted(base.glob("ckpt-*"), reverse=True):
            try:  # a checkpoint torn by a kill or a full disk is skipped for the one before it
                skeleton = json.loads((path / "state.json").read_text())
                tensors = load_file(str(path / "tensors.safetensors"))
                step = int(path.name.split("-")[1])
            except (OSError, ValueError, SafetensorError):
                continue
            if not isinstance(skeleton, dict):
                continue
            yield step, tensors, skeleton
