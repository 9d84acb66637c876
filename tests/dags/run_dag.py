"""Runs one DAG with `dag.test()` against the metadata database AIRFLOW_HOME configures, after serializing the
DagBag to it (Airflow 3.1+ runs what the database holds), and prints what happened as JSON: the run's state,
each task's state and the asset events of the run. Used by test_dags: `python run_dag.py DAG_ID CONF_JSON`."""
import json
import sys

from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.taskinstance import TaskInstance
from airflow.settings import Session
from airflow.utils.state import State  # noqa: F401  (loads the ORM's state enums)

dag_id, conf = sys.argv[1], json.loads(sys.argv[2])
DagBundlesManager().sync_bundles_to_db()
bag = DagBag()
assert not bag.import_errors, bag.import_errors
sync_bag_to_db(bag, bundle_name="dags-folder", bundle_version=None)
run = bag.get_dag(dag_id).test(run_conf=conf)
session = Session()
events = (session.query(AssetEvent, AssetModel.name).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
          .filter(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run.run_id).all())
tasks = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id).all()
print(json.dumps({"state": str(run.state), "run_id": run.run_id,
                  "tasks": {ti.task_id: str(ti.state) for ti in tasks},
                  "asset_events": [{"asset": name, "partition_key": e.partition_key, "extra": e.extra}
                                   for e, name in events]}))
