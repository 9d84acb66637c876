"""The promotion gate's parts built so far: drift comparisons (`stattests`), conversion at equal label age
(`maturity`), the audit of a window (`windows`, `drift`, `run`), the model gate (`gate`) and on-call alerts
(`alerts`)."""
