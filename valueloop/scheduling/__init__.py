"""What the Airflow DAGs in `dags/` share: the assets, the settings they read, the failure notifier, and
`valueloop airflow up | down | status` (a local Airflow on PostgreSQL)."""
