"""A seeded world with hidden ground truth (item bait and quality) whose traffic looks like production."""
from config.simulator import SimulatorConfig
from simulator.traffic import SimEvent, Simulation, SimulationSummary
from simulator.world import World

__all__ = ["SimEvent", "Simulation", "SimulationSummary", "SimulatorConfig", "World"]
