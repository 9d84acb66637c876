"""The promotion gate's parts built so far: drift comparisons (`stattests`) and on-call alerts (`alerts`)."""
