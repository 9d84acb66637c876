"""The promotion gate's parts: drift comparisons (`stattests`) and on-call alerts (`alerts`)."""
