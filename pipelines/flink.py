"""Pipeline options for Beam's FlinkRunner: an embedded Flink (`[local]`) behind the job server that infra/flink builds.

The job server is a Java process that Beam starts from `flink_job_server_jar` and stops when the job ends; the
Python harness runs in this process (LOOPBACK), so the pipeline's code needs no container.
"""
from __future__ import annotations

from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

JOB_SERVER_JAR = Path(__file__).resolve().parents[1] / "infra" / "flink" / "target" / "valueloop-flink-job-server.jar"


class MissingJobServerError(RuntimeError):
    pass


def require_job_server(jar: Path = JOB_SERVER_JAR) -> Path:
    if not jar.is_file():
        raise MissingJobServerError(f"no Flink job server at {jar}: run `make flink` (see infra/flink/pom.xml)")
    return jar


def flink_pipeline_options(streaming: bool = False, **extra) -> PipelineOptions:
    jar = require_job_server()
    return PipelineOptions(flags=[], runner="FlinkRunner", flink_master="[local]", flink_job_server_jar=str(jar),
                           environment_type="LOOPBACK", parallelism=1, streaming=streaming, **extra)
