"""Promotion: the MLflow model registry with safe promotion and rollback (`registry`), and the alerts that tell
on-call what the audit decided (`alerts`)."""
