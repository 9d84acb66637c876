"""The `kafka` section of the settings file: where the local node listens and keeps its files, its topics and
their limits."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.units import DAY_MS
from schemas.topics import DEAD_LETTER_TOPIC, EVENT_TOPICS, SERVING_LOG_TOPIC

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JAR_DIR = PROJECT_ROOT / "infra" / "kafka" / "target" / "lib"
DEFAULT_RUN_DIR = PROJECT_ROOT / ".run" / "kafka"


class KafkaSettings(BaseModel):
    """Where the local node listens, keeps its files and which topics it carries."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(19092, ge=1024, le=65535)
    controller_port: int = Field(19093, ge=1024, le=65535)
    run_dir: Path = DEFAULT_RUN_DIR
    jar_dir: Path = DEFAULT_JAR_DIR
    partitions: int = Field(4, ge=1, le=64)
    heap_mb: int = Field(1024, ge=256)
    start_timeout_s: float = Field(90.0, gt=0)
    event_topics: dict[str, str] = Field(default_factory=lambda: dict(EVENT_TOPICS))
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    serving_log_topic: str = Field(SERVING_LOG_TOPIC, description="The ranking service's serving log: one "
                                   "ServedRequest a request, landed by the hourly labeling for the gate's "
                                   "off-policy check.")
    event_max_bytes: int = Field(10_485_760, ge=65_536, description="The event topics' max.message.bytes: the "
                                 "largest record batch the broker appends to them, and so the largest the join "
                                 "must read. A larger batch is refused at produce time.")
    dead_letter_max_bytes: int = Field(1_048_576, ge=65_536, description="The dead-letter topic's max.message.bytes: "
                                       "a dead letter larger than this keeps a prefix of its value, marked truncated.")
    dead_letter_retention_days: float = Field(30.0, gt=0, description="How long the dead-letter topic keeps a letter, "
                                              "from when it was written.")

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def topics(self) -> list[str]:
        return [*self.event_topics.values(), self.serving_log_topic, self.dead_letter_topic]

    def topic_configs(self, topic: str) -> dict[str, str]:
        """The configs valueloop sets on a topic it creates: each with its size limit, the dead-letter topic with
        its own retention and the producer's record time."""
        if topic != self.dead_letter_topic:
            return {"max.message.bytes": str(self.event_max_bytes)}
        return {"max.message.bytes": str(self.dead_letter_max_bytes), "cleanup.policy": "delete",
                "retention.ms": str(int(self.dead_letter_retention_days * DAY_MS)),
                "message.timestamp.type": "CreateTime"}
