"""valueloop: retrain recommenders on what users value, not on what they click."""
import os

# tensorflow-recommenders needs Keras 2 (tf-keras); this must be set before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
# TensorFlow's C++ info lines after start-up say nothing an operator acts on; its start-up notices are filtered
# where it is imported (trainer.tf_runtime). Warnings stay.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
