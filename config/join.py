"""The `join` section of the settings file: runners, lateness, the reader's limits and the labels' windows."""
from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from schemas.units import ms


class LabelStrategy(str, enum.Enum):
    WAIT_FOR_WINDOW = "wait_for_window"
    FAKE_NEGATIVE = "fake_negative"


class LabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    click_window_s: float = Field(1800.0, gt=0, description="A click counts if it comes this soon after the impression.")
    cart_window_s: float = Field(3600.0, gt=0, description="Add-to-cart attribution window after the click.")
    purchase_window_s: float = Field(7 * 86400.0, gt=0, description="Purchase attribution window after the click.")
    strategy: LabelStrategy = LabelStrategy.WAIT_FOR_WINDOW

    @property
    def click_window_ms(self) -> int:
        return ms(self.click_window_s)

    @property
    def cart_window_ms(self) -> int:
        return ms(self.cart_window_s)

    @property
    def purchase_window_ms(self) -> int:
        return ms(self.purchase_window_s)

    @property
    def horizon_ms(self) -> int:
        """How long after an impression its labels can still change."""
        return ms(self.click_window_s + max(self.cart_window_s, self.purchase_window_s))


class Runner(str, enum.Enum):
    """Where a join runs: `direct` is Beam's FnApiRunner for bounded runs and Prism for streaming ones; `flink` an
    embedded Flink behind Beam's Flink job server."""

    DIRECT = "direct"
    FLINK = "flink"


class JoinMode(str, enum.Enum):
    """`bounded`: fixed offset ranges, then exit; `streaming`: follow the topics until stopped."""

    BOUNDED = "bounded"
    STREAMING = "streaming"


class LatenessReference(str, enum.Enum):
    """What an event's lateness, and the bounded join's watermark, are measured against.

    RECORD_TIME: the Kafka record timestamp, when the producer delivered the event. EVENT_TIME: the event-time
    frontier of the event's partition (the newest plausible event time read before it, in offset order), for
    replays: a tool that re-sends old events without setting record timestamps stamps them all with the time of
    the replay, and against that every event is late.
    """

    RECORD_TIME = "record_time"
    EVENT_TIME = "event_time"


class JoinSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: LabelConfig = LabelConfig()
    out_of_orderness_s: float = Field(900.0, ge=0, description="How far event time may run behind the newest record.")
    allowed_lateness_s: float = Field(86400.0, ge=0, description="Events delivered later than this go to the late output.")
    lateness_reference: LatenessReference = Field(
        LatenessReference.RECORD_TIME, description="record_time, or event_time for replayed topics (see "
                                                   "LatenessReference).")
    max_late_share: float = Field(0.5, ge=0, le=1, description="A bounded run in which a larger share of the events "
                                  "is late fails (exit 1) after writing; 1 accepts any share.")
    max_record_time_ahead_s: float = Field(3600.0, ge=0, description="A record stamped later than the join's clock "
                                           "plus this is a dead letter (record_time_ahead) and moves no watermark.")
    max_batch_bytes: int | None = Field(None, ge=1 << 20, description="The largest record batch the reader takes. "
                                        "By default the largest max.message.bytes of the topics read, asked of the "
                                        "broker when the job is planned; raise it to read a batch written before "
                                        "its topic's limit was lowered.")
    stable_offsets_wait_s: float = Field(10.0, ge=0, description="How long a snapshot of end offsets waits for "
                                         "transactions already ended to become readable (read_committed).")
    output_dir: Path = Path("out/examples")
    serving_log_dir: Path | None = Field(Path("out/serving_log"), description="Where the hourly labeling lands "
                                         "the serving log topic's requests: one Avro file an event hour, "
                                         "dt=<day>/hour=<HH>, with its manifest (`pipelines.serving_log`). None: "
                                         "nothing is landed, and the retraining audit has no serving log.")
    progress_log_s: float = Field(60.0, gt=0, description="How often the streaming join logs its progress: the "
                                  "records its source read and how far behind it is, the label step's firings, "
                                  "labeling work and bundles (`pipelines.progress`).")
    lag_alert_records: int = Field(100_000, ge=0, description="A stream more records than this behind the "
                                   "partitions' ends is behind (`valueloop join status`).")
    lag_alert_after_s: float = Field(900.0, gt=0, description="A stream behind for this long, or silent for this "
                                     "long, is falling behind: the command running it warns through the alert "
                                     "sinks that do not page, and `valueloop join status` exits 1.")
    stream_shards: int = Field(16, ge=1, description="Groups of users the streaming label step keys its state "
                               "by: each bundle's events go to it as one batch a group, so fewer groups make larger "
                               "batches, and more spread the state.")
    release_every_s: float = Field(3600.0, ge=0, description="The streaming label step's release grid: examples "
                                   "come out at the first grid moment after they are due, each just before the "
                                   "writer settles an hour. 0 releases each at its own moment (one timer firing "
                                   "an impression when a backlog is read).")
    split_size: int = Field(50_000, ge=1, description="Offsets per unit of parallel reading.")
    user_shards: int = Field(64, ge=1, description="Groups of users that the bounded join labels together.")
    direct_num_workers: int = Field(1, ge=1)
    prism_location: Path = Field(Path(__file__).resolve().parents[1] / "infra" / "prism" / "bin" / "prism",
                                 description="The Prism binary that streaming runs use (built by make prism).")

    @property
    def out_of_orderness_ms(self) -> int:
        return ms(self.out_of_orderness_s)

    @property
    def allowed_lateness_ms(self) -> int:
        return ms(self.allowed_lateness_s)

    @property
    def release_every_ms(self) -> int:
        return ms(self.release_every_s)

    @property
    def lag_alert_after_ms(self) -> int:
        return ms(self.lag_alert_after_s)

    @property
    def max_record_time_ahead_ms(self) -> int:
        return ms(self.max_record_time_ahead_s)
