"""Beam jobs that turn the raw event topics into labeled training examples.

`kafka_source` reads topic-partition offset ranges, `decode` turns messages into events and routes what it
cannot read to the dead-letter topic, `labeling` holds the labeling rules as one pure function, `join`
groups each user's events and applies them, and `examples` writes tf.Example TFRecords by event hour.
"""
