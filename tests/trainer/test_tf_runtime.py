"""TensorFlow's start-up notices stay off stderr; what else it writes there still shows."""
import subprocess
import sys

SCRIPT = """
import sys
from trainer.tf_runtime import tf
print((tf.constant(2) + 1).numpy())
sys.stderr.write("after import\\n")
"""


def test_importing_tensorflow_prints_no_cuda_or_absl_lines_on_a_machine_without_a_gpu():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    assert run.stdout.strip() == "3"
    for notice in ("cuInit", "absl", "oneDNN", "cuda", "cpu_feature_guard"):
        assert notice not in run.stderr, run.stderr
    assert run.stderr.endswith("after import\n")


def test_other_lines_written_to_stderr_during_the_import_are_kept():
    script = """
import os, sys
import trainer.tf_runtime as runtime
with runtime._without_start_up_notices():
    os.write(2, b"a real warning\\n")
    os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert run.stderr == "a real warning\n"
