"""`valueloop models`, `register`, `promote` and `rollback`: the model registry (`promotion.registry`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from promotion.registry import Registry, RegistryError
from schemas.units import utc
from valueloop.cli.common import ConfigOption, fail, settings_from


def _registry(config: Optional[Path]):
    try:
        return Registry(settings_from(config).registry)
    except RegistryError as error:
        fail(str(error))


def _replaces(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        fail(f"--replaces {value!r}: a version number, or none when production is unset", code=2)


def models(config: Optional[Path] = ConfigOption,
           as_json: bool = typer.Option(False, "--json", help="Versions, aliases and the log as JSON.")):
    """The registered versions with their windows, verdicts and aliases, and the promotion log."""
    registry = _registry(config)
    versions, promotions = registry.versions(), registry.promotions()
    if as_json:
        typer.echo(json.dumps({"model": registry.name, "uri": registry.uri, "aliases": registry.aliases(),
                               "versions": [v.__dict__ for v in versions], "promotions": promotions}, indent=2))
        return
    typer.echo(f"{registry.name} at {registry.uri}")
    typer.echo(f"{'version':>7}  {'created (UTC)':<19}  {'window':<24} {'verdict':<13} aliases")
    for v in versions:
        created = utc(v.created_ms).strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{v.version:>7}  {created:<19}  {v.window or '-':<24} {v.verdict or '-':<13} "
                   f"{', '.join(v.aliases)}")
    typer.echo(f"promotions ({registry.log.path}):")
    for p in promotions:
        came = "none" if p["from"] is None else p["from"]
        typer.echo(f"  {p['at']}  {p['kind']:<8} {came} -> {p['to']}  {p['outcome']}"
                   f"{' (recovered)' if p.get('recovered') else ''}  verdict {p.get('verdict')}: {p['reason']}")


def register(config: Optional[Path] = ConfigOption,
             model: Path = typer.Option(..., help="A SavedModel from `valueloop train`."),
             window: str = typer.Option(..., help="The training window it was trained for, e.g. 2026-11-05."),
             verdict: Optional[Path] = typer.Option(None, help="The audit's verdict.json to record with it.")):
    """Register a trained model as a version aliased `candidate` (the same model for the same window again is
    the same version)."""
    registry = _registry(config)
    try:
        version = registry.register(model, window)
        if verdict is not None:
            said = json.loads(verdict.read_text())
            files = [verdict] + [p for p in [verdict.parent / "report.html"] if p.exists()]
            version = registry.record_verdict(version.version, said["status"], said.get("reasons", []), files)
    except (RegistryError, OSError, ValueError, KeyError) as error:
        fail(str(error))
    typer.echo(f"registered {registry.name} version {version.version} for {window}"
               f" (verdict {version.verdict or 'not recorded'})")


def promote(config: Optional[Path] = ConfigOption,
            version: int = typer.Option(..., help="The version to promote."),
            replaces: str = typer.Option(..., help="The version production holds now (none: unset); refused if "
                                                   "production has moved."),
            reason: str = typer.Option(..., help="Why, for the promotion log.")):
    """Point the `production` alias at a version whose audit let it through, if production still holds
    --replaces."""
    registry = _registry(config)
    try:
        entry = registry.promote(version, _replaces(replaces), reason)
    except RegistryError as error:
        fail(str(error))
    typer.echo(f"production: version {entry['to']} (was {entry['from'] or 'unset'}; {entry['outcome']})")


def rollback(config: Optional[Path] = ConfigOption,
             replaces: int = typer.Option(..., help="The version production holds now."),
             reason: str = typer.Option(..., help="Why, for the promotion log.")):
    """Return production to the version it held before its current one."""
    registry = _registry(config)
    try:
        entry = registry.rollback(replaces, reason)
    except RegistryError as error:
        fail(str(error))
    typer.echo(f"production: version {entry['to']} (rolled back from {entry['from']})")
