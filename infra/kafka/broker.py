"""Start, stop and inspect the local Kafka node: `valueloop kafka up | down | status`.

The node runs from the official jars that Maven resolves from `infra/kafka/pom.xml` into
`infra/kafka/target/lib`, and keeps its data, logs and pid under one run directory.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaConfigurationError, KafkaError, TopicAlreadyExistsError

from config.kafka import KafkaSettings

KAFKA_INFRA = Path(__file__).resolve().parent



def new_cluster_id(draw=uuid.uuid4) -> str:
    """A random cluster id as Kafka writes one (a UUID in URL-safe base64), never starting with "-": the storage
    tool would read such an id as an option and refuse to format, one start in 64. Kafka's own ids skip those too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(draw().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class BrokerError(RuntimeError):
    """The node could not be started, reached or stopped; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap_servers: str
    run_dir: Path
    topic_messages: dict[str, int]  # messages currently kept per topic, summed over partitions

    def describe(self) -> str:
        if not self.running:
            return f"kafka: down (run directory {self.run_dir})"
        lines = [f"kafka: up, pid {self.pid}, {self.bootstrap_servers}, run directory {self.run_dir}"]
        lines += [f"  {topic}: {count} messages" for topic, count in sorted(self.topic_messages.items())]
        return "\n".join(lines)


class KafkaBroker:
    """The local single-node cluster described by `settings`."""

    def __init__(self, settings: KafkaSettings | None = None):
        self.settings = settings or KafkaSettings()
        self.run_dir = Path(self.settings.run_dir)
        self.data_dir = self.run_dir / "data"
        self.log_dir = self.run_dir / "logs"
        self.pid_file = self.run_dir / "broker.pid"
        self.address_file = self.run_dir / "bootstrap_servers"
        self.properties_file = self.run_dir / "server.properties"

    # -- public commands -------------------------------------------------------------------------

    def up(self) -> BrokerStatus:
        """Starts the node unless it already runs, waits until it answers, then creates missing topics."""
        started = None
        must_start = self.pid() is None
        if must_start:
            java = self._java()
            classpath = self._classpath()
            self._check_ports_free()
            self._write_properties()
            if not (self.data_dir / "meta.properties").exists():
                self._format(java, classpath)
        try:  # from the start on: a Ctrl-C at any point stops the node it started
            if must_start:
                started = self._start(java, classpath)
            self._wait_until_answering(started)
        except BaseException:
            if started is not None and started.poll() is None:  # a node that never answered is not left running
                started.kill()
                started.wait()
                self.pid_file.unlink(missing_ok=True)
            raise
        self.create_topics()
        return self.status()

    def down(self, timeout_s: float = 60.0) -> None:
        """Stops the node cleanly (SIGTERM, then SIGKILL after `timeout_s`); its data stays."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> BrokerStatus:
        pid = self.pid()
        counts = self.topic_message_counts() if pid is not None else {}
        return BrokerStatus(pid is not None, pid, self.bootstrap_servers, self.run_dir, counts)

    @property
    def bootstrap_servers(self) -> str:
        """Where the node of this run directory listens: as recorded when it started, else as configured."""
        try:
            return self.address_file.read_text().strip() or self.settings.bootstrap_servers
        except FileNotFoundError:
            return self.settings.bootstrap_servers

    def pid(self) -> int | None:
        """The running node's pid, or None; a stale pid file is ignored."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) and _is_kafka(pid) else None

    def create_topics(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="valueloop-admin")
        try:
            missing = [t for t in self.settings.topics if t not in set(admin.list_topics())]
            for topic in missing:
                try:
                    admin.create_topics([NewTopic(topic, self.settings.partitions, 1,
                                                  topic_configs=self.settings.topic_configs(topic))])
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    def delete_topics(self) -> None:
        """Deletes the settings' topics that exist, with their messages (a benchmark's own, say)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="valueloop-admin")
        try:
            present = [t for t in self.settings.topics if t in set(admin.list_topics())]
            if present:
                admin.delete_topics(present)
        finally:
            admin.close()

    def topic_message_counts(self) -> dict[str, int]:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap_servers, client_id="valueloop-status")
        try:
            counts = {}
            for topic in self.settings.topics:
                partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
                if not partitions:
                    continue
                ends = consumer.end_offsets(partitions)
                starts = consumer.beginning_offsets(partitions)
                counts[topic] = sum(ends[tp] - starts[tp] for tp in partitions)
            return counts
        finally:
            consumer.close()

    # -- steps ---------------------------------------------------------------------------------

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise BrokerError("Java is missing: install a JDK 17 or newer (apt-get install openjdk-17-jre-headless) or set JAVA_HOME")
        return java

    def _classpath(self) -> str:
        jar_dir = Path(self.settings.jar_dir)
        if not list(jar_dir.glob("kafka_2.13-*.jar")):
            raise BrokerError(
                f"the Kafka jars are not resolved in {jar_dir}: run `make setup` "
                f"(or `mvn -f {KAFKA_INFRA / 'pom.xml'} dependency:copy-dependencies`)"
            )
        return f"{jar_dir}/*"

    def _check_ports_free(self) -> None:
        for port in (self.settings.port, self.settings.controller_port):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.settings.host, port))
                except OSError:
                    raise BrokerError(
                        f"port {self.settings.host}:{port} is taken by another process: stop it, or choose "
                        f"other ports with --port / --controller-port (kafka.port in the config)"
                    ) from None

    def _write_properties(self) -> None:
        s = self.settings
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{s.host}:{s.controller_port}",
                    f"listeners=PLAINTEXT://{s.host}:{s.port},CONTROLLER://{s.host}:{s.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{s.host}:{s.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    f"num.partitions={s.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    # Simulated event times lie in the past; keep every message until the run directory goes.
                    "log.retention.ms=-1",
                    "message.max.bytes=10485760",
                ]
            )
            + "\n"
        )

    def _format(self, java: str, classpath: str) -> None:
        result = subprocess.run(
            [java, "-cp", classpath, *self._log_options(), "kafka.tools.StorageTool", "format",
             "-t", new_cluster_id(), "-c", str(self.properties_file)],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting {self.data_dir} failed:\n{result.stdout}{result.stderr}")

    def _start(self, java: str, classpath: str) -> subprocess.Popen:
        out = open(self.log_dir / "server.out", "ab")
        process = subprocess.Popen(
            [java, f"-Xmx{self.settings.heap_mb}m", "-Xms256m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
             *self._log_options(), "-cp", classpath, "kafka.Kafka", str(self.properties_file)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()
        try:
            self.pid_file.write_text(f"{process.pid}\n")
            self.address_file.write_text(f"{self.settings.bootstrap_servers}\n")
        except BaseException:  # Ctrl-C as the files are written: the caller never gets the process to stop
            process.kill()
            process.wait()
            self.pid_file.unlink(missing_ok=True)
            raise
        return process

    def _log_options(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={KAFKA_INFRA / 'log4j2.properties'}", f"-Dkafka.logs.dir={self.log_dir}"]

    def _wait_until_answering(self, started: subprocess.Popen | None) -> None:
        """Until the node answers. A node that `up` has just `started` is watched through its process handle, not
        `pid()`: in one CI run `pid()` found a starting node gone (its command-line check failed) while it ran on."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        while True:
            exit_code = started.poll() if started is not None else (None if self.pid() is not None else "unknown")
            if exit_code is not None:
                raise BrokerError(f"the broker exited while starting (exit code {exit_code}); last lines of its "
                                  f"log:\n{self._log_tail()}")
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, client_id="valueloop-probe",
                    request_timeout_ms=5000,
                )
                admin.describe_cluster()
                admin.close()
                return
            except KafkaConfigurationError:
                raise
            except (KafkaError, OSError):
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"the broker did not answer on {self.settings.bootstrap_servers} within "
                        f"{self.settings.start_timeout_s:.0f}s; last lines of its log:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.5)

    def _log_tail(self, lines: int = 30) -> str:
        text = ""
        for name in ("server.out", "server.log"):
            path = self.log_dir / name
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        return text or "(no log written)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours has exited
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _is_kafka(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
