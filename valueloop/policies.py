"""Which policy serves the simulated world, by name: what `valueloop simulate --policy`, `valueloop ab run` and
the closed loop accept.

- `logging`: the world's click-trained logging policy (`serving.policies.LoggingPolicy`);
- `production` or `candidate`: the registry version that alias names, its SavedModel ranked by its value score
  (p(click) for a CTR-only model), logged as `<model>/v<N>`;
- anything else: a SavedModel directory, logged under its directory's name.

Models sample their slates as `loop.serving_*` says (Plackett-Luce at a temperature, or epsilon-greedy, with a
support floor of uniformly random slates).
"""
from __future__ import annotations

from pathlib import Path

from config import Settings
from promotion.registry import Registry
from serving.policies import LoggingPolicy, ModelPolicy
from serving.propensities import Sampling
from trainer.exported import Predictor

LOGGING = "logging"
ALIASES = ("production", "candidate")


def policy_from(settings: Settings, spec: str, name: str | None = None, output: str = "value"):
    """The policy `spec` names, logged as `name` when given; raises ValueError naming what is missing."""
    sim = settings.simulator
    if spec == LOGGING:
        config = sim.logging_policy if name is None else sim.logging_policy.model_copy(update={"name": name})
        return LoggingPolicy(config, list(sim.surfaces))
    if spec in ALIASES:
        registry = Registry(settings.registry)
        version = registry.aliases().get(spec)
        if version is None:
            raise ValueError(f"the registry ({registry.uri}) has no {spec} version to serve with")
        model_dir, default_name = registry.version(version).model_dir, f"{registry.name}/v{version}"
    else:
        model_dir, default_name = Path(spec), Path(spec).name
    try:
        return model_policy(settings, model_dir, name or default_name, output)
    except FileNotFoundError as error:
        raise ValueError(f"--policy {spec!r}: {error}") from None


def model_policy(settings: Settings, model: Path | Predictor, name: str, output: str = "value") -> ModelPolicy:
    """A model (its SavedModel directory, or anything that predicts as one) serving the simulated world as
    production serves: the world's candidates and slate size, sampled as `loop.serving_*` says; logged as `name`."""
    sim = settings.simulator
    return ModelPolicy(model, name, output, list(sim.surfaces), list(sim.devices), sim.logging_policy.candidates,
                       sim.logging_policy.slate_size, Sampling.of(settings.loop))
