"""The model gate: the candidate and production scored on the audited window, per-task metrics and purchases in
the top k judged on the worse end of bootstrap intervals (`metrics`), and the model-side clickbait signature
(`models`)."""
