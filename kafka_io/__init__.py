"""Kafka clients: the bulk fetcher of offset ranges (kafka-python's network client, record batches parsed in C)
and the producer (librdkafka through confluent-kafka)."""
