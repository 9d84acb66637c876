"""The import contract (`.importlinter`): imports run one way, from orchestration down to the event contract, and
the product never imports the benchmarks. import-linter reads every import, at a module's top or inside a
function."""
import ast
import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_run_one_way_with_no_exception_listed():
    contracts = configparser.ConfigParser()
    contracts.read(ROOT / ".importlinter")
    for section in contracts.sections():
        assert not any(key.startswith("ignore") for key in contracts[section]), f"{section} lists exceptions"
    result = subprocess.run([Path(sys.executable).with_name("lint-imports"), "--config", str(ROOT / ".importlinter")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


# What may be imported inside a function: libraries that cost seconds or pull a service's whole client into a
# process that may never use them. TensorFlow comes through `trainer.tf_runtime`, which quiets its start-up; the
# trainer's modules that build on it at their top (the model, training, the census check) count as TensorFlow.
HEAVY = {
    "tensorflow": "TensorFlow", "tf_keras": "TensorFlow", "tensorflow_recommenders": "TensorFlow",
    "trainer.tf_runtime": "TensorFlow", "trainer.model": "TensorFlow", "trainer.train": "TensorFlow",
    "trainer.census": "TensorFlow",
    "airflow": "Airflow", "mlflow": "MLflow", "apache_beam.runners": "Beam's runners",
}
PRODUCT = ("schemas", "config", "kafka_io", "infra", "pipelines", "trainer", "serving", "simulator", "audit", "gate",
           "ope", "ab", "promotion", "valueloop")


def _late_imports(source: str):
    """(line, module) of every import inside a function of `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    yield inner.lineno, "." * inner.level + (inner.module or "")
                elif isinstance(inner, ast.Import):
                    yield from ((inner.lineno, alias.name) for alias in inner.names)


def _heavy(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in HEAVY)


def test_late_import_finder_sees_imports_in_functions_only():
    source = "import os\ndef f():\n    import json\n    from trainer.model import X\nclass C:\n    def g(self):\n" \
             "        from . import sibling\n"
    assert list(_late_imports(source)) == [(3, "json"), (4, "trainer.model"), (7, ".")]
    assert _heavy("trainer.model") and _heavy("airflow.sdk") and not _heavy("airflowish") and not _heavy("json")


def test_a_module_imports_what_it_uses_at_its_top_but_the_heavy_libraries():
    late = [f"{path.relative_to(ROOT)}:{line} imports {module} inside a function"
            for package in PRODUCT for path in sorted((ROOT / package).rglob("*.py"))
            for line, module in _late_imports(path.read_text()) if not _heavy(module)]
    assert late == []
