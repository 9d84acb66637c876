"""TensorFlow and TensorFlow Recommenders, imported once per process without their start-up notices.

TensorFlow 2.21 writes its notices (oneDNN, CUDA drivers absent, cuInit failing, CPU features) through absl
before absl's logging is initialised, straight to the process's stderr, so no log level reaches them
(TF_CPP_MIN_LOG_LEVEL included). On a machine without a GPU they say nothing an operator acts on. So the
import, and the device probe that logs cuInit, run with stderr's file descriptor spilled to a temporary file;
afterwards every line of it that is not one of those notices is written back to stderr.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tensorflow-recommenders needs Keras 2, before TensorFlow loads
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # its info lines after start-up (this one it does honour)

_NOTICES = re.compile(rb"All log messages before absl::InitializeLog|oneDNN custom operations|Could not find cuda "
                      rb"drivers|failed call to cuInit|cpu_feature_guard|This TensorFlow binary is optimized|"
                      rb"To enable the following instructions|TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS)")


@contextlib.contextmanager
def _without_start_up_notices():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as spill:
        os.dup2(spill.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            spill.seek(0)
            kept = [line for line in spill.read().splitlines(keepends=True) if not _NOTICES.search(line)]
            if kept:
                os.write(2, b"".join(kept))


with _without_start_up_notices():
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    tf.config.list_physical_devices("GPU")  # the device probe, where cuInit fails on a machine without a GPU

__all__ = ["tf", "tfrs"]
