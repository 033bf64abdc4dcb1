"""The job queue between the app and the background worker, and the worker's lease.

The app enqueues jobs and may ask one to stop; the worker claims them, reports progress and the
outcome. One worker per workspace: it holds a lease it renews with a heartbeat; a lease whose
heartbeat is older than ``stale_after`` belongs to a dead worker and may be taken over, and the jobs
it was running go back to the queue (their run folder holds the checkpoint to resume from).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from labelkit.store.schema import Job, WorkerLease
from labelkit.store.schema import utcnow as _now

if TYPE_CHECKING:
    from labelkit.store.store import Store

LEASE_ID = 1
LOCKED_RETRIES = 4  # each attempt already waits out SQLite's busy timeout
T = TypeVar("T")


def is_locked(error: OperationalError) -> bool:
    """SQLite's "database is locked" / "busy": another process held the write lock too long."""
    text = str(error.orig).lower()
    return "database is locked" in text or "database is busy" in text


def retry_locked(action: Callable[[], T], *, attempts: int = LOCKED_RETRIES, pause: float = 0.5) -> T:
    """Run ``action``; when the database stays locked past the busy timeout, try again (up to
    ``attempts`` times in all), so a long write elsewhere does not kill an idle worker."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except OperationalError as error:
            if attempt == attempts or not is_locked(error):
                raise
            time.sleep(pause * attempt)
    raise AssertionError("unreachable")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class JobInfo:
    id: int
    kind: str
    status: str
    params: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    stop_requested: bool
    worker: str | None
    model_version_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class LeaseInfo:
    owner: str
    pid: int
    host: str
    device: str
    started_at: datetime
    heartbeat_at: datetime

    def age(self, now: datetime | None = None) -> float:
        return ((now or _now()) - self.heartbeat_at).total_seconds()


def _job(row: Job) -> JobInfo:
    return JobInfo(
        row.id,
        row.kind,
        row.status,
        dict(row.params or {}),
        dict(row.progress or {}),
        row.error,
        bool(row.stop_requested),
        row.worker,
        row.model_version_id,
        row.created_at,
        row.started_at,
        row.finished_at,
    )


class LeaseHeldError(RuntimeError):
    """Another live worker serves this workspace."""


class JobQueue:
    def __init__(self, store: Store) -> None:
        self._store = store

    # ------------------------------------------------------------------------------------ jobs
    def enqueue(self, kind: str, params: dict[str, Any] | None = None) -> int:
        with self._store.write() as s:
            row = Job(kind=kind, status="queued", params=params or {}, progress={}, stop_requested=False)
            s.add(row)
            s.flush()
            return row.id

    def get(self, job_id: int) -> JobInfo:
        with self._store.read() as s:
            row = s.get(Job, job_id)
            if row is None:
                raise LookupError(f"no job with id {job_id}")
            return _job(row)

    def recent(self, limit: int = 20) -> list[JobInfo]:
        with self._store.read() as s:
            return [_job(r) for r in s.scalars(select(Job).order_by(Job.id.desc()).limit(limit))]

    def active(self) -> list[JobInfo]:
        """Queued and running jobs, oldest first."""
        with self._store.read() as s:
            rows = s.scalars(select(Job).where(Job.status.in_(("queued", "running"))).order_by(Job.id))
            return [_job(r) for r in rows]

    def claim(self, worker: str) -> JobInfo | None:
        """Take the oldest queued job (atomically: two workers never get the same one).

        Retries while the database stays locked (a long import or migration elsewhere)."""
        return retry_locked(lambda: self._claim(worker))

    def _claim(self, worker: str) -> JobInfo | None:
        with self._store.write() as s:
            row = s.scalars(
                select(Job)
                .where(Job.status == "queued")
                .order_by(Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            if row.stop_requested:
                row.status, row.finished_at = "cancelled", _now()
                return None
            row.status, row.worker, row.started_at = "running", worker, row.started_at or _now()
            s.flush()
            return _job(row)

    def report(self, job_id: int, progress: dict[str, Any]) -> bool:
        """Store progress; returns True when someone asked the job to stop."""
        with self._store.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(progress=progress))
            return bool(s.scalar(select(Job.stop_requested).where(Job.id == job_id)))

    def finish(
        self, job_id: int, status: str, *, error: str | None = None, model_version_id: int | None = None
    ) -> None:
        with self._store.write() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status=status, error=error, model_version_id=model_version_id, finished_at=_now())
            )

    def request_stop(self, job_id: int) -> None:
        """Ask a job to stop: a queued one is cancelled, a running one stops at its next step."""
        with self._store.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(stop_requested=True))
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(status="cancelled", finished_at=_now())
            )

    def requeue_running(self) -> int:
        """Put jobs a dead worker was running back in the queue; returns how many."""
        with self._store.write() as s:
            result = s.execute(
                update(Job).where(Job.status == "running").values(status="queued", worker=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------------- lease
    def lease(self) -> LeaseInfo | None:
        with self._store.read() as s:
            row = s.get(WorkerLease, LEASE_ID)
            if row is None:
                return None
            return LeaseInfo(row.owner, row.pid, row.host, row.device, row.started_at, row.heartbeat_at)

    def acquire(self, owner: str, *, pid: int, host: str, device: str, stale_after: float) -> str | None:
        """Take the lease if free, stale, or held by a process of this host that no longer exists.

        Returns a sentence saying whose lease was taken over (None when the lease was free or ours);
        raises ``LeaseHeldError`` naming the live holder otherwise.
        """
        now = _now()
        with self._store.write() as s:
            row = s.get(WorkerLease, LEASE_ID, with_for_update=True)
            took_over: str | None = None
            if row is not None and row.owner != owner:
                age = (now - row.heartbeat_at).total_seconds()
                # A worker killed with SIGKILL leaves a lease that looks live until it goes stale;
                # on its own host we can see at once that its process is gone.
                if row.host == host and not pid_alive(row.pid):
                    took_over = (
                        f"took over the lease of worker pid {row.pid} on {row.host}, which no longer "
                        f"runs (heartbeat {age:.0f} s ago)"
                    )
                elif age < stale_after:
                    raise LeaseHeldError(
                        f"a worker already serves this workspace (pid {row.pid} on {row.host}, "
                        f"heartbeat {age:.0f} s ago); stop it first or wait {stale_after - age:.0f} s"
                    )
                else:
                    took_over = (
                        f"took over the stale lease of worker pid {row.pid} on {row.host} "
                        f"(no heartbeat for {age:.0f} s)"
                    )
            if row is None:
                row = WorkerLease(id=LEASE_ID)
                s.add(row)
            row.owner, row.pid, row.host, row.device = owner, pid, host, device
            row.started_at, row.heartbeat_at = now, now
        return took_over

    def heartbeat(self, owner: str) -> None:
        """Renew the lease; raises ``LeaseHeldError`` if another worker took it over."""
        with self._store.write() as s:
            result = s.execute(
                update(WorkerLease)
                .where(WorkerLease.id == LEASE_ID, WorkerLease.owner == owner)
                .values(heartbeat_at=_now())
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseHeldError("this worker's lease was taken over by another worker")

    def release(self, owner: str) -> None:
        with self._store.write() as s:
            row = s.get(WorkerLease, LEASE_ID)
            if row is not None and row.owner == owner:
                s.delete(row)

    def worker_alive(self, stale_after: float) -> bool:
        lease = self.lease()
        return lease is not None and lease.age() < stale_after
