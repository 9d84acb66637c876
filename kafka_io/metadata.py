"""Which broker leads each partition of a topic, asked through kafka-python's network client."""
from __future__ import annotations

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
