"""The pipeline stack's children, broken on purpose: SIGKILL one, start it again in its place."""

from __future__ import annotations

import os
import signal
import time

from exec_watchdog.pipeline.children import Child
from exec_watchdog.pipeline.stack import Stack


def stack_child(stack: Stack, name: str) -> Child:
    for child in stack.children.children:
        if child.name == name:
            return child
    raise LookupError(f"no child named {name!r}: {[c.name for c in stack.children.children]}")


def kill_child(stack: Stack, name: str) -> int:
    """SIGKILL one child (no chance to clean up) and reap it; returns its pid."""
    child = stack_child(stack, name)
    assert child.process is not None and child.process.poll() is None, f"{name} is not running"
    pid = child.process.pid
    os.kill(pid, signal.SIGKILL)
    child.process.wait(10)
    return pid


def respawn_child(stack: Stack, name: str) -> Child:
    """Start a child again with the same command line, in the same place in the stack (so the
    stack stops it at the end); does not wait for it (see :func:`wait_child_ready`)."""
    index, old = next((i, c) for i, c in enumerate(stack.children.children) if c.name == name)
    old.stop(timeout=5.0)  # already dead or not: make sure, and forget it
    new = Child(old.name, old.argv, old.log_path, old.ready, cwd=old.cwd, env=old.env)
    new.start()
    stack.children.children[index] = new
    return new


def wait_child_ready(child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not child.ready():
        child.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{child.name} not ready {timeout:g} s after its restart (log: {child.log_path})")
        time.sleep(0.1)


def restart_child(stack: Stack, name: str, timeout: float = 60.0) -> Child:
    child = respawn_child(stack, name)
    wait_child_ready(child, timeout)
    return child
