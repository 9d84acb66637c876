"""`valueloop airflow up | down | status`: a local Airflow that runs the loop's DAGs for real.

`up` starts, under the run directory (`.run/airflow` by default):
- PostgreSQL from Debian's packages (`apt-get install postgresql`) as the metadata database: its cluster is
  initialised on first use into `postgres/`, owned by the `postgres` user when run as root (PostgreSQL refuses
  to run as root), listening on 127.0.0.1 only with trust authentication for local connections. Where no
  PostgreSQL is installed, `database: sqlite` is the stated fallback (a SQLite file: one writer at a time, fine
  for a laptop, not for a team).
- the metadata database migrated (`airflow db migrate`), then the api-server (UI and REST API), scheduler,
  dag-processor and triggerer, with the LocalExecutor, the DAGs of `dags/` and the project's settings file
  (`VALUELOOP_CONFIG`) wired in. The UI and API answer on 127.0.0.1 with every request treated as an admin
  (Airflow's simple auth manager, `all_admins`): a local deployment, never one to expose.

Each process's pid and log are in the run directory; `down` stops them and the database, keeping their data;
`up` again finds what is running and starts what is not.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from config.airflow import AirflowSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowError(RuntimeError):
    """The local Airflow could not be started or stopped; the message says which part and where its log is."""


@dataclasses.dataclass
class Status:
    running: dict[str, int]  # process name to pid
    database: str
    url: str
    healthy: dict | None

    def lines(self) -> list[str]:
        if not self.running:
            return [f"airflow: down (database {self.database})"]
        out = [f"airflow: {'up' if self.healthy else 'starting'} at {self.url} (database {self.database})"]
        out += [f"  {name}: pid {pid}" for name, pid in self.running.items()]
        if self.healthy:
            out += [f"  {part}: {info.get('status')}" for part, info in self.healthy.items() if isinstance(info, dict)]
        return out


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


class LocalAirflow:
    def __init__(self, settings: AirflowSettings, config_file: Path | None = None):
        self.settings = settings
        self.home = Path(settings.run_dir).resolve()
        self.config_file = Path(config_file).resolve() if config_file else None
        self.url = f"http://127.0.0.1:{settings.api_port}"
        self._pids = self.home / "pids.json"

    # -- the database ---------------------------------------------------------------------------------------------

    @property
    def _pg_data(self) -> Path:
        return self.home / "postgres" / "data"

    def _as_postgres(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def database_uri(self) -> str:
        if self.settings.database == "sqlite":
            return f"sqlite:///{self.home / 'airflow.db'}"
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.settings.postgres_port}/airflow"

    def _postgres_up(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            raise AirflowError("PostgreSQL is not installed (apt-get install postgresql); or set airflow.database: "
                               "sqlite for the single-writer fallback")
        root = self._pg_data.parent
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            closed = [p for p in [self.home, *self.home.parents] if p.stat().st_mode & 0o001 == 0]
            if closed:  # the postgres user must reach its data directory
                raise AirflowError(f"PostgreSQL runs as the postgres user, who cannot enter {closed[-1]}: set "
                                   "airflow.run_dir to a directory others may enter (or chmod o+x it)")
        if not (self._pg_data / "PG_VERSION").exists():
            self._run(self._as_postgres() + [str(bin_dir / "initdb"), "-D", str(self._pg_data), "-U", "postgres",
                                             "--auth=trust", "-E", "UTF8"], "initdb", root / "initdb.log")
        status = subprocess.run(self._as_postgres() + [str(bin_dir / "pg_ctl"), "-D", str(self._pg_data), "status"],
                                capture_output=True, text=True)
        if status.returncode != 0:
            options = (f"-c listen_addresses=127.0.0.1 -p {self.settings.postgres_port} "
                       f"-c unix_socket_directories={root}")
            self._run(self._as_postgres() + [str(bin_dir / "pg_ctl"), "-D", str(self._pg_data), "-l",
                                             str(root / "postgres.log"), "-o", options, "-w", "-t", "60", "start"],
                      "PostgreSQL", root / "postgres.log")
        exists = subprocess.run([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.settings.postgres_port),
                                 "-U", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'airflow'"],
                                capture_output=True, text=True)
        if exists.stdout.strip() != "1":
            self._run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.settings.postgres_port), "-U",
                       "postgres", "airflow"], "createdb", root / "postgres.log")

    def _postgres_down(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is not None and (self._pg_data / "postmaster.pid").exists():
            subprocess.run(self._as_postgres() + [str(bin_dir / "pg_ctl"), "-D", str(self._pg_data), "-m", "fast",
                                                  "-w", "stop"], capture_output=True, text=True)

    @staticmethod
    def _run(command: list[str], what: str, log: Path) -> None:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise AirflowError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]} "
                               f"(see {log})")

    # -- Airflow --------------------------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """What every Airflow process of this deployment runs with."""
        secrets_file = self.home / "secrets.json"
        if not secrets_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            secrets_file.write_text(json.dumps({"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32)}))
            secrets_file.chmod(0o600)
        keys = json.loads(secrets_file.read_text())
        environment = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_uri(),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.settings.api_port),
            "AIRFLOW__API__SECRET_KEY": keys["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt"],
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
            # An idle scheduler looks for work four times a second, not once: a task's successor starts sooner,
            # at the cost of a little CPU while nothing runs.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
            "TF_USE_LEGACY_KERAS": "1",
        }
        if self.config_file is not None:
            environment["VALUELOOP_CONFIG"] = str(self.config_file)
        return environment

    def _airflow(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def _running(self) -> dict[str, int]:
        try:
            pids = json.loads(self._pids.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {name: pid for name, pid in pids.items() if _alive(pid)}

    def up(self) -> Status:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.settings.database == "postgres":
            self._postgres_up()
        environment = self.environment()
        migrate_log = self.home / "db-migrate.log"
        with migrate_log.open("w") as log:
            migrated = subprocess.run([self._airflow(), "db", "migrate"], env=environment, stdout=log,
                                      stderr=subprocess.STDOUT)
        if migrated.returncode != 0:
            raise AirflowError(f"airflow db migrate failed: see {migrate_log}")
        running = self._running()
        (self.home / "logs").mkdir(exist_ok=True)
        for name in PROCESSES:
            if name in running:
                continue
            log = (self.home / "logs" / f"{name}.log").open("ab")
            command = [self._airflow(), name] + (["--port", str(self.settings.api_port), "--host", "127.0.0.1"]
                                                 if name == "api-server" else [])
            process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.home)
            running[name] = process.pid
        self._pids.write_text(json.dumps(running))
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            status = self.status()
            dead = [n for n in PROCESSES if n not in status.running]
            if dead:
                raise AirflowError(f"{', '.join(dead)} exited at start: see {self.home / 'logs' / (dead[0] + '.log')}")
            if status.healthy and all(isinstance(v, dict) and v.get("status") == "healthy"
                                      for k, v in status.healthy.items() if k in ("metadatabase", "scheduler")):
                return status
            time.sleep(1)
        raise AirflowError(f"the api-server did not answer healthy at {self.url} within "
                           f"{self.settings.start_timeout_s:g} s: see {self.home / 'logs' / 'api-server.log'}")

    def status(self) -> Status:
        running = self._running()
        healthy = None
        if "api-server" in running:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=3) as answer:
                    healthy = json.load(answer)
            except (OSError, ValueError):
                healthy = None
        return Status(running, self.settings.database, self.url, healthy)

    def down(self) -> Status:
        running = self._running()
        for pid in running.values():
            with_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in running.values()):
            time.sleep(0.5)
        for pid in running.values():
            if _alive(pid):
                with_group(pid, signal.SIGKILL)
        self._pids.unlink(missing_ok=True)
        if self.settings.database == "postgres":
            self._postgres_down()
        return self.status()


def with_group(pid: int, sig: int) -> None:
    """Signals the process and the workers it started (its session's group)."""
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
