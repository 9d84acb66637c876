"""The model registry on MLflow with its SQLite store, in real processes: registration that a re-run does not
repeat, promotion refused for a blocked or unaudited version or a stale `--replaces`, two concurrent promotions,
rollback, and a promotion SIGKILLed at steps spread over all of its work leaving production wholly old or wholly new."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from promotion.registry import PromotionRefused, Registry, RegistryError, StaleProduction, model_digest
from config.registry import RegistrySettings

HARNESS = Path(__file__).with_name("promote_until_killed.py")


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> list[Path]:
    """Three real SavedModels (a one-weight tf.Module each), different in content."""
    from trainer.tf_runtime import tf

    class Scorer(tf.Module):
        def __init__(self, weight: float):
            super().__init__()
            self.weight = tf.Variable(weight)

        @tf.function(input_signature=[tf.TensorSpec([None])])
        def score(self, x):
            return x * self.weight

    out = []
    for i in range(3):
        module = Scorer(float(i))
        path = tmp_path_factory.mktemp(f"model{i}")
        tf.saved_model.save(module, str(path))
        out.append(path)
    return out


def registry_at(directory: Path) -> Registry:
    return Registry(RegistrySettings(directory=directory, lock_timeout_s=30))


def audited(registry: Registry, model: Path, window: str, status: str = "pass") -> int:
    version = registry.register(model, window).version
    registry.record_verdict(version, status, [] if status == "pass" else [f"{status} for the test"])
    return version


def test_a_rerun_registers_no_second_version(saved_models, tmp_path):
    registry = registry_at(tmp_path)
    first = registry.register(saved_models[0], "2026-11-05")
    again = registry.register(saved_models[0], "2026-11-05")
    other = registry.register(saved_models[1], "2026-11-05")
    assert again.version == first.version and other.version == first.version + 1
    assert [v.version for v in registry.versions()] == [1, 2]
    assert registry.aliases() == {"candidate": 2}
    assert first.model_dir is not None and model_digest(first.model_dir) == model_digest(saved_models[0])


def test_only_a_version_whose_audit_let_it_through_is_promoted(saved_models, tmp_path):
    registry = registry_at(tmp_path)
    unaudited = registry.register(saved_models[0], "2026-11-05").version
    with pytest.raises(PromotionRefused, match="not recorded"):
        registry.promote(unaudited, None, "no audit")
    blocked = audited(registry, saved_models[1], "2026-11-06", "block")
    with pytest.raises(PromotionRefused, match="block"):
        registry.promote(blocked, None, "blocked")
    assert registry.production() is None and registry.promotions() == []
    passed = audited(registry, saved_models[2], "2026-11-07")
    entry = registry.promote(passed, None, "first model")
    assert registry.production() == passed and entry["outcome"] == "committed"
    [logged] = registry.promotions()
    assert (logged["from"], logged["to"], logged["verdict"], logged["reason"]) == (None, passed, "pass", "first model")
    assert registry.promote(passed, passed, "again")["outcome"] == "unchanged" and len(registry.promotions()) == 1


def test_a_promotion_naming_a_stale_version_is_refused(saved_models, tmp_path):
    registry = registry_at(tmp_path)
    one, two, three = (audited(registry, m, f"2026-11-0{i + 5}") for i, m in enumerate(saved_models))
    registry.promote(one, None, "first")
    registry.promote(two, one, "second")
    with pytest.raises(StaleProduction, match=f"production is version {two}, not version {one}"):
        registry.promote(three, one, "thinks production is still the first")
    assert registry.production() == two and len(registry.promotions()) == 2


def test_rollback_restores_the_previous_version_and_then_the_one_before(saved_models, tmp_path):
    registry = registry_at(tmp_path)
    one, two, three = (audited(registry, m, f"2026-11-0{i + 5}") for i, m in enumerate(saved_models))
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(one, "nothing promoted")
    registry.promote(one, None, "first")
    registry.promote(two, one, "second")
    registry.promote(three, two, "third")
    with pytest.raises(StaleProduction):
        registry.rollback(two, "names the wrong version")
    assert registry.rollback(three, "third is bad")["to"] == two and registry.production() == two
    assert registry.rollback(two, "second is bad too")["to"] == one and registry.production() == one
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(one, "nothing before the first")
    assert [(p["kind"], p["from"], p["to"]) for p in registry.promotions()] == [
        ("promote", None, one), ("promote", one, two), ("promote", two, three), ("rollback", three, two),
        ("rollback", two, one)]


def _promote_in_process(directory: Path, version: int, expected: int, go: Path) -> subprocess.Popen:
    script = ("import sys, time, pathlib\n"
              "from promotion.registry import Registry\nfrom config.registry import RegistrySettings\n"
              "registry = Registry(RegistrySettings(directory=sys.argv[1]))\n"
              "go = pathlib.Path(sys.argv[4])\n"
              "while not go.exists(): time.sleep(0.001)\n"
              "print(registry.promote(int(sys.argv[2]), int(sys.argv[3]), 'concurrent')['to'])\n")
    return subprocess.Popen([sys.executable, "-c", script, str(directory), str(version), str(expected), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_of_two_concurrent_promotions_one_wins_and_the_other_fails_clearly(saved_models, tmp_path):
    registry = registry_at(tmp_path / "registry")
    one, two, three = (audited(registry, m, f"2026-11-0{i + 5}") for i, m in enumerate(saved_models))
    registry.promote(one, None, "first")
    go = tmp_path / "go"
    racers = {v: _promote_in_process(tmp_path / "registry", v, one, go) for v in (two, three)}
    import time

    time.sleep(4)  # both have opened the registry and wait for the start
    go.touch()
    results = {v: (p.wait(60), *p.communicate()) for v, p in racers.items()}
    winners = [v for v, (code, _, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    [loser] = [v for v in racers if v not in winners]
    assert f"production is version {winners[0]}, not version {one}" in results[loser][2]
    assert "StaleProduction" in results[loser][2]
    assert registry.production() == winners[0]
    assert [(p["from"], p["to"], p["outcome"]) for p in registry.promotions()] == [
        (None, one, "committed"), (one, winners[0], "committed")]


def test_a_promotion_killed_at_any_step_leaves_production_wholly_old_or_wholly_new(saved_models, tmp_path):
    registry = registry_at(tmp_path)
    one, two = audited(registry, saved_models[0], "2026-11-05"), audited(registry, saved_models[1], "2026-11-06")
    registry.promote(one, None, "first")
    harness = [sys.executable, str(HARNESS), str(tmp_path)]
    counted = subprocess.run(harness + ["0", str(two), str(one)], capture_output=True, text=True, timeout=120)
    assert counted.returncode == 0, counted.stderr
    steps = int(counted.stdout.split()[-1])
    assert steps >= 5
    registry = registry_at(tmp_path)
    old, new = two, one  # the uninterrupted run promoted `two`; each killed one tries to swap them back
    outcomes = []
    for kill_at in sorted({round(1 + i * (steps - 1) / 19) for i in range(20)}):  # 20 steps spread over all
        killed = subprocess.run(harness + [str(kill_at), str(new), str(old)], capture_output=True, text=True,
                                timeout=120)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        registry = registry_at(tmp_path)  # opening it settles what the dead process left
        production = registry.production()
        assert production in (old, new), (kill_at, production)
        last = registry.promotions()[-1]
        assert last["outcome"] != "pending", last
        if last["to"] == new and last["from"] == old:  # the killed run got as far as its intent
            assert last["outcome"] == ("committed" if production == new else "aborted"), (kill_at, last)
        outcomes.append("new" if production == new else "old")
        if production == new:
            old, new = new, old
    assert "old" in outcomes and "new" in outcomes  # killed both before and after the alias moved
    lines = [json.loads(line) for line in (tmp_path / "promotions.jsonl").read_text().splitlines()]
    assert len({line["id"] for line in lines if line["event"] == "intent"}) == len(
        [line for line in lines if line["event"] in ("committed", "aborted")])
