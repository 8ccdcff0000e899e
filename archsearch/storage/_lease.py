"""One driver per search: who holds a search's lease, and when a holder counts as gone.

A driver takes the lease of its search (columns of the ``searches`` row) before it
writes anything, renews it every :data:`HEARTBEAT_S` seconds and releases it when it
stops. Another driver is refused while the holder lives. A holder is *gone* when

* it ran on this machine (same host name and PID namespace) and its process no longer
  exists: ``kill -9`` and resume on one machine goes on at once; or
* its last heartbeat is older than :data:`LEASE_TIMEOUT_S` (a driver on another machine,
  or a hung one); heartbeats use the writers' clocks, which must agree to within a few
  seconds (NTP).

A gone holder's lease is taken over silently; ``take_over=True`` (``archsearch search
--take-over``) takes it from a live one. Once a storage object holds a lease, each of its
writes first checks, in the same transaction, that the lease is still its own, so a
driver whose lease was taken over cannot write again (:class:`~archsearch.errors.LeaseLostError`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import socket

LEASE_TIMEOUT_S = 60.0  # a holder whose heartbeat is older than this is gone
HEARTBEAT_S = 10.0  # how often a running driver renews its lease
MAX_HOST_LENGTH = 255  # host names (and host + PID namespace)
TOKEN_LENGTH = 32  # hex characters of a driver's random token


def _pid_namespace() -> str:
    """The PID namespace of this process (containers on one host have different ones), or ''."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclasses.dataclass(frozen=True)
class DriverId:
    """A driver process: its host, where its pid means something, its pid, and a random token."""

    host: str
    machine: str  # host name + PID namespace: a pid can be checked only from the same machine
    pid: int
    token: str

    @classmethod
    def current(cls) -> "DriverId":
        """A fresh identity for a driver in this process (a new token every call)."""
        host = socket.gethostname()[:MAX_HOST_LENGTH]
        machine = f"{host} {_pid_namespace()}".strip()[:MAX_HOST_LENGTH]
        return cls(host=host, machine=machine, pid=os.getpid(), token=secrets.token_hex(TOKEN_LENGTH // 2))

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"


@dataclasses.dataclass(frozen=True)
class Lease:
    """Who holds a search, since when, and its last heartbeat (naive UTC datetimes)."""

    holder: DriverId
    since: datetime.datetime
    heartbeat: datetime.datetime

    def describe(self, now: datetime.datetime) -> str:
        age = max(0.0, (now - self.heartbeat).total_seconds())
        return (f"{self.holder.describe()}, since {self.since:%Y-%m-%d %H:%M:%S} UTC, "
                f"last heartbeat {age:.0f} s ago")


def process_exists(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (a zombie counts as existing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def holder_gone(lease: Lease, me: DriverId, now: datetime.datetime, timeout_s: float) -> bool:
    """Whether ``lease``'s holder is gone as seen by driver ``me`` at ``now`` (see the module docstring)."""
    if lease.holder.machine == me.machine and lease.holder.pid != me.pid and not process_exists(lease.holder.pid):
        return True
    return (now - lease.heartbeat).total_seconds() > timeout_s
