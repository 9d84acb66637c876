"""The promotion gate's parts built so far: drift comparisons (`stattests`), conversion at equal label age
(`maturity`) and on-call alerts (`alerts`)."""
