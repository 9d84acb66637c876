"""What runs beside the code: the Kafka broker (and, later, the Flink job server), from jars Maven resolves."""
