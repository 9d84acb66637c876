"""Off-policy evaluation: estimators of a target policy's value from logged bandit feedback, for single actions
and slates (`estimators`), and the gate's check of a candidate against production's serving log (`check`)."""
