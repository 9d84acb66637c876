"""One Apache Kafka node in KRaft mode (broker and controller together) on 127.0.0.1."""
from infra.kafka.broker import BrokerError, KafkaBroker

__all__ = ["BrokerError", "KafkaBroker"]
