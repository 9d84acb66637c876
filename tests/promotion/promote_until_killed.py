"""A promotion that SIGKILLs its own process at its N-th step: before or after any statement the MLflow store runs,
at any commit, before any write or fsync of the promotion log. N = 0 never kills, and prints how many steps the
promotion took. Run by test_registry: `python promote_until_killed.py DIRECTORY N VERSION EXPECTED`."""
import os
import signal
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine

from promotion.registry import Registry

from config.registry import RegistrySettings

directory, kill_at, version, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
registry = Registry(RegistrySettings(directory=directory))
steps = 0


def step(*_args, **_kwargs):
    global steps
    steps += 1
    if steps == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


for name in ("before_cursor_execute", "after_cursor_execute", "commit"):
    event.listen(Engine, name, step)
write, fsync = os.write, os.fsync
os.write = lambda fd, data: (step(), write(fd, data))[1]
os.fsync = lambda fd: (step(), fsync(fd))[1]
registry.promote(version, expected, f"killed at step {kill_at}")
print(steps)
