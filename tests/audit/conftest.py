"""What the audit's tests share: a pair of windows whose second day a bait-loving serving policy made (the
clickbait signature), written as the join's partitions."""
import datetime as dt

import pytest


@pytest.fixture(scope="session")
def clickbait_days(tmp_path_factory):
    """Partitions of two simulated days: the first served by the logging policy, the second by one that shows
    more bait. Returns the directory and the two days' event-time ranges."""
    from pipelines.label_files import label_events, write_examples
    from simulator import Simulation, SimulatorConfig
    from tests.audit.test_audit_scenarios import BASE, DAY_MS, LABELS, WORLD

    examples = tmp_path_factory.mktemp("clickbait_days")
    for day, changes in ((0, {}), (1, {"logging_policy": {"headline_weight": 6.0}})):
        config = SimulatorConfig.model_validate({**BASE, "seed": 1 + 2 * day, **changes})
        config = config.model_copy(update={"start": config.start + dt.timedelta(days=day)})
        events = [(e.name, e.datum) for e in Simulation(config, world=WORLD).events()]
        write_examples(label_events(events, LABELS, watermark_ms=config.end_ms + 10 * DAY_MS), examples,
                       {"day": day})
    start = SimulatorConfig.model_validate(BASE).start_ms
    return examples, (start, start + DAY_MS), (start + DAY_MS, start + 2 * DAY_MS)
