"""What the broker says of topics: which broker leads each partition (kafka-python's network client), and the
topic configs that decide what a reader must be able to take (confluent-kafka's admin client)."""
from __future__ import annotations

from typing import Iterable, NamedTuple

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka import errors as kafka_errors
from kafka.protocol.metadata import MetadataRequest


class TopicMetadataError(LookupError):
    """The broker does not know the topic, or will not say who leads it."""


def partition_leaders(client, topic: str, timeout_ms: int) -> list[int]:
    """The leader's node id for each partition of `topic`, by partition number."""
    node = client.least_loaded_node()
    request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                              allow_auto_topic_creation=False)
    response = client.send_and_receive(node, request, timeout_ms=timeout_ms)
    for described in response.topics:
        if described.name == topic:
            if described.error_code:
                error = kafka_errors.for_code(described.error_code)
                raise TopicMetadataError(f"topic {topic}: {error.__name__}")
            leaders = dict((p.partition_index, p.leader_id) for p in described.partitions)
            return [leaders[p] for p in sorted(leaders)]
    raise TopicMetadataError(f"topic {topic}: not in the broker's metadata")


class TopicConfig(NamedTuple):
    """The configs of a topic, as the broker applies them (its own value, else the broker's default)."""

    max_message_bytes: int  # max.message.bytes: the largest record batch the broker appends (after compression)
    timestamp_type: str  # message.timestamp.type: CreateTime (the producer's) or LogAppendTime (the broker's)


def topic_configs(bootstrap_servers: str, topics: Iterable[str], timeout_s: float = 10.0) -> dict[str, TopicConfig]:
    """Each topic's `TopicConfig`; TopicMetadataError naming the broker and the topic when one does not exist."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "client.id": "valueloop-metadata",
                         "log_level": 4})  # warnings and worse: not the queue it purges as it closes
    resources = {topic: ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in dict.fromkeys(topics)}
    if not resources:
        return {}
    futures = admin.describe_configs(list(resources.values()), request_timeout=timeout_s)
    found = {}
    for topic, resource in resources.items():
        try:
            configs = futures[resource].result(timeout=timeout_s)
        except KafkaException as error:
            if error.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise TopicMetadataError(f"topic {topic} does not exist on {bootstrap_servers}") from None
            raise
        found[topic] = TopicConfig(int(configs["max.message.bytes"].value), configs["message.timestamp.type"].value)
    return found
