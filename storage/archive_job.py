"""ArchiveJob: a worker's periodic run of retention (storage/retention.py), on a thread of its own.

Every ARCHIVE_INTERVAL_SECONDS each worker (and `engine run`) keeps the events' monthly
partitions ready ahead (Postgres), then, with ORDER_RETENTION_DAYS set, archives the months
that ended more than that many days ago. Every worker runs it, one at a time across all of
them: each month is archived in a transaction holding the archiver's advisory lock, and a
worker that finds it taken skips this round (the one holding it does the work). Months an
operator restored are left alone by the job (`engine archive` archives them again).
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from storage.errors import StorageError
from storage.records import utcnow
from storage.retention import ArchiveBusy

log = logging.getLogger(__name__)


class ArchiveJob:
    """Runs `run_once` every `every_s` seconds until stopped (the first run at start)."""

    def __init__(self, orders, retention_days: int, every_s: float):
        self.orders = orders
        self.retention_days = retention_days
        self.every_s = every_s
        self.runs = 0  # completed runs (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archive-job", daemon=True)

    def start(self) -> ArchiveJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the run in progress, if any (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def run_once(self) -> list:
        """One round: partitions ahead, then the archive when retention is on; what was archived."""
        if not self.retention_days:
            self.orders.ensure_partitions()
            return []
        cutoff = utcnow() - timedelta(days=self.retention_days)
        done = self.orders.archive(cutoff, skip_restored=True)
        for month in done:
            log.info("archived %s: %d orders, %d events%s", month.name, month.orders, month.events,
                     " (its partition detached)" if month.detached else "")
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except ArchiveBusy:
                log.debug("archive: another worker is archiving; skipped this round")
            except StorageError as exc:  # an outage, a lock that timed out: the next round tries again
                log.warning("archive: this round failed (%s); next in %.0fs", exc, self.every_s)
            except Exception:  # noqa: BLE001 - the job must outlive a bug in one round
                log.exception("archive: this round failed; next in %.0fs", self.every_s)
            self.runs += 1
            self._stop.wait(self.every_s)
