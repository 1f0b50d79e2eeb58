"""Small helpers shared by tests."""

from __future__ import annotations

import time


def wait_for(cond, timeout: float = 15.0, poll: float = 0.02):
    """Poll `cond` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout}s")
