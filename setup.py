"""valueloop: a feedback-loop training pipeline for recommenders that ranks by what users value, not by clicks."""
from setuptools import Extension, find_packages, setup

setup(
    name="valueloop",
    version="0.1.0",
    description="Kafka events to Beam-labeled examples to a multi-task ranker, with a drift audit before promotion",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["valueloop*", "config*", "schemas*", "simulator*", "kafka_io*", "pipelines*", "audit*",
                                    "trainer*", "serving*", "gate*", "ope*", "ab*", "promotion*", "infra*", "bench*"]),
    # The join's work on every message, in C: Kafka's record format and Avro record bodies read into Python objects,
    # labeled examples written as tf.Example bytes. A C compiler and Python's headers build them at install.
    ext_modules=[Extension(name, [source], extra_compile_args=["-O2", "-Wall", "-Werror"])
                 for name, source in (("kafka_io._records", "kafka_io/_records.c"),
                                      ("schemas._native", "schemas/_native.c"),
                                      ("pipelines._tf_example", "pipelines/_tf_example.c"))],
    package_data={"schemas": ["avro/*.avsc"], "infra": ["kafka/pom.xml", "kafka/log4j2.properties"]},
    # Exact versions of these and of everything beneath them are in requirements.lock, which `make` installs.
    install_requires=[
        "apache-beam==2.75.0",
        "tensorflow==2.21.0",
        "tf-keras==2.21.0",
        "tensorflow-recommenders==0.7.7",
        "apache-airflow==3.3.2",
        "apache-airflow-providers-apache-beam",
        "kafka-python>=3.0.12,<3.1",  # the bulk fetcher uses its network client and protocol classes
        "crc32c>=2.7",  # record-batch checksums in C; kafka-python's pure-Python fallback is far slower
        "lz4>=4",
        "python-snappy>=0.7",  # snappy, librdkafka's most common codec, for the fetcher (kafka-python's codec)
        "confluent-kafka>=2.16",  # librdkafka: every producer, and the dead-letter topic's admin
        "fastavro>=1.13,<2",
        "numpy>=2",
        "pydantic>=2.10,<3",
        "pyyaml>=6",
        "typer>=0.15",
        "tqdm>=4.66",
        "psutil>=6",
        "mlflow==3.17.2",
        "psycopg2-binary>=2.9",  # `valueloop airflow up`: Airflow's metadata database on PostgreSQL ...
        "asyncpg>=0.30",  # ... and Airflow's async engine on it  # the model registry: versions, the production alias, their artifacts
        "scikit-learn>=1.5",  # `valueloop census` re-measures the published gradient-boosting reference
    ],
    extras_require={"test": ["pytest>=8"]},
    entry_points={"console_scripts": ["valueloop=valueloop.cli:main"],
                  "valueloop.commands": ["bench = bench.cli:app", "census = bench.cli:census"]},
)
