"""What runs beside the code: the local Kafka node, Beam's Flink job server and Prism, from jars Maven resolves and
Go modules."""
