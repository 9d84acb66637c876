"""Settings of the join, kept apart from Beam so that reading a settings file does not import it."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.labeling import LabelConfig


class JoinSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: LabelConfig = LabelConfig()
    out_of_orderness_s: float = Field(900.0, ge=0, description="How far event time may run behind the newest record.")
    allowed_lateness_s: float = Field(86400.0, ge=0, description="Events delivered later than this go to the late output.")
    output_dir: Path = Path("out/examples")
    split_size: int = Field(50_000, ge=1, description="Offsets per unit of parallel reading.")
    user_shards: int = Field(64, ge=1, description="Groups of users that the bounded join labels together.")
    direct_num_workers: int = Field(1, ge=1)
    prism_location: Path = Field(Path(__file__).resolve().parents[1] / "infra" / "prism" / "bin" / "prism",
                                 description="The Prism binary that streaming runs use (built by make prism).")
