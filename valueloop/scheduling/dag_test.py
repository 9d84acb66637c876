"""`python -m valueloop.scheduling.dag_test DAG_ID CONF_JSON`: one DAG run with `dag.test()` against the metadata
database that AIRFLOW_HOME configures (migrated), after the DagBag is serialized to it (Airflow 3.1+ runs what
the database holds); prints what happened as JSON on its last line: the run's state, each task's state and the
run's asset events. The DAG tests and `valueloop bench dags` run it, in the environment `environment` gives.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def environment(home: Path) -> dict[str, str]:
    """An Airflow home of its own with a SQLite metadata database, the project's DAGs and no examples."""
    return {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{Path(home) / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(Path(home) / "logs"), "TF_USE_LEGACY_KERAS": "1"}


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed: {done.stderr[-2000:]}")


def run(env: dict[str, str], dag_id: str, conf: dict, timeout_s: float = 1800) -> dict:
    """`dag.test()` of one DAG in its own process; what happened (see the module's docstring)."""
    finished = subprocess.run([sys.executable, "-m", "valueloop.scheduling.dag_test", dag_id, json.dumps(conf)],
                              env=env, capture_output=True, text=True, timeout=timeout_s)
    if finished.returncode != 0:
        raise RuntimeError(f"dag.test of {dag_id} failed: {finished.stderr[-5000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main(dag_id: str, conf: dict) -> dict:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.settings import Session

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag()
    if bag.import_errors:
        raise RuntimeError(f"the DAGs do not import: {bag.import_errors}")
    sync_bag_to_db(bag, bundle_name="dags-folder", bundle_version=None)
    dag_run = bag.get_dag(dag_id).test(run_conf=conf)
    session = Session()
    events = (session.query(AssetEvent, AssetModel.name).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
              .filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == dag_run.run_id).all())
    tasks = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id,
                                               TaskInstance.run_id == dag_run.run_id).all()
    return {"state": str(dag_run.state), "run_id": dag_run.run_id,
            "tasks": {ti.task_id: str(ti.state) for ti in tasks},
            "asset_events": [{"asset": name, "partition_key": e.partition_key, "extra": e.extra}
                             for e, name in events]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
