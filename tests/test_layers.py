"""The import contract (`.importlinter`): imports run one way, from orchestration down to the event contract, and
the product never imports the benchmarks. import-linter reads every import, at a module's top or inside a
function."""
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
