"""`valueloop kafka up | down | status | topics`: the local Kafka node, and valueloop's topics on any broker."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from kafka.errors import KafkaError

from valueloop.cli.common import ConfigOption, broker, broker_up, fail, settings_from

app = typer.Typer(help="The local Kafka node (KRaft, one broker+controller on 127.0.0.1).", no_args_is_help=True)


@app.command("up")
def up(config: Optional[Path] = ConfigOption,
       port: Optional[int] = typer.Option(None, help="Client port (default 19092)."),
       controller_port: Optional[int] = typer.Option(None, help="Controller port (default 19093)."),
       run_dir: Optional[Path] = typer.Option(None, help="Where data, logs and the pid file live.")):
    """Start the node (formatting its storage the first time), wait until it answers, create the topics."""
    typer.echo(broker_up(settings_from(config, port=port, controller_port=controller_port, run_dir=run_dir)).describe())


@app.command("down")
def down(config: Optional[Path] = ConfigOption, run_dir: Optional[Path] = typer.Option(None)):
    """Stop the node cleanly; its data stays for the next `up`."""
    node = broker(settings_from(config, run_dir=run_dir))
    node.down()
    typer.echo(node.status().describe())


@app.command("status")
def status(config: Optional[Path] = ConfigOption, run_dir: Optional[Path] = typer.Option(None)):
    """Say whether the node runs and how many messages each topic holds; exit 1 when it is down."""
    described = broker(settings_from(config, run_dir=run_dir)).status()
    typer.echo(described.describe())
    if not described.running:
        raise typer.Exit(1)


@app.command("topics")
def topics(config: Optional[Path] = ConfigOption, port: Optional[int] = typer.Option(None, help="Client port.")):
    """Create any missing valueloop topics on a broker that runs already (one started by Docker, say)."""
    node = broker(settings_from(config, port=port, run_dir=Path("/nonexistent/valueloop")))
    try:
        node.create_topics()
    except KafkaError as error:
        fail(f"cannot create topics on {node.bootstrap_servers}: {error}")
    typer.echo("\n".join(f"{node.bootstrap_servers} {topic}" for topic in node.settings.topics))
