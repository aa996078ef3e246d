"""Group commit: concurrent submissions appended in one transaction, queue by queue.

Appends to one site's chain are serialised by its chain-head lock, so under load they
queue. Rather than each waiting for the lock, its own transaction and its own fsync,
the submissions that arrive in a queue (``consent.ledger``: one for every site, and one
per site for a chain locked elsewhere) while a batch is being written join the next: its
leader (the first of them) waits for the chain's lock, only then takes every submission
waiting (those that came while it waited too), appends them all in one transaction,
commits, then wakes each member with its own outcome. Nobody is answered before the
commit that holds their submission, and a batch is never held back to wait for more: a
lone submission is a batch of one.

Across processes nothing is shared here: the chain-head row lock (PostgreSQL) or the
write lock (SQLite) serialises the batches of every process, so the chain never forks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

#: Writes a batch in one transaction and returns, per item in order, its outcome or
#: the exception that is that item's own failure (which fails no other item). It is
#: given ``take``, which hands it the batch: called once the chain is locked, so that
#: the batch holds whoever came while the lock was awaited.
WriteBatch = Callable[[Callable[[], Sequence[Item]]], Sequence[Any]]


@dataclass(eq=False)
class _Member(Generic[Item]):
    item: Item
    woken: threading.Event = field(default_factory=threading.Event)
    is_leader: bool = False
    outcome: Any = None


#: How long a chain found locked elsewhere keeps to its own queue, whose leader waits for
#: the lock, rather than trying it again with every site's batch (another transaction,
#: spent, each time another process holds it): a few batches' time, so that a chain
#: contended now and then soon goes back to sharing a transaction with the others.
CONTENDED_SECONDS = 0.05


class GroupCommit:
    """Per process: queues of submissions per chain, each written by one leader at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[Hashable, list[_Member]] = {}
        self._busy: set[Hashable] = set()
        self._contended: dict[Hashable, float] = {}

    def is_busy(self, chain: Hashable) -> bool:
        """Whether a batch for ``chain`` is being written (a submission now joins the next),
        or ``chain`` was found locked elsewhere within the last ``CONTENDED_SECONDS``."""
        if chain in self._busy:
            return True
        since = self._contended.get(chain)
        return since is not None and time.monotonic() - since < CONTENDED_SECONDS

    def note_contended(self, chain: Hashable) -> None:
        """``chain`` was found locked elsewhere (another process writes to it too)."""
        self._contended[chain] = time.monotonic()

    def submit(self, chain: Hashable, item: Item, write_batch: WriteBatch) -> Any:
        """Have ``item`` written with whatever else is waiting for ``chain``; its outcome.

        Raises the item's own exception, or the batch's if the whole batch failed.
        """
        member = _Member(item)
        with self._lock:
            self._waiting.setdefault(chain, []).append(member)
            member.is_leader = chain not in self._busy
            self._busy.add(chain)
        if not member.is_leader:
            member.woken.wait()
        if member.is_leader:
            self._lead(chain, write_batch)
        if isinstance(member.outcome, BaseException):
            raise member.outcome
        return member.outcome

    def _lead(self, chain: Hashable, write_batch: WriteBatch) -> None:
        batch: list[_Member] = []

        def take() -> list[Item]:
            if not batch:  # the first call takes them; a later one sees the same batch
                with self._lock:
                    batch.extend(self._waiting.pop(chain))
            return [member.item for member in batch]

        try:
            outcomes = list(write_batch(take))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except BaseException as error:  # noqa: BLE001 - every member gets it, then raises it
            take()  # a batch that failed before it was taken fails whole too
            outcomes = [error] * len(batch)
        with self._lock:
            waiting = self._waiting.get(chain)
            successor = waiting[0] if waiting else None
            if successor is None:
                self._busy.discard(chain)
            else:
                successor.is_leader = True  # those who came meanwhile: the next batch
        for member, outcome in zip(batch, outcomes, strict=True):
            member.outcome = outcome
            member.woken.set()
        if successor is not None:
            successor.woken.set()


def write_each_alone(write_batch: WriteBatch, items: Sequence[Item]) -> list[Any]:
    """Outcomes of writing each item in its own batch: a failure stays its own."""
    outcomes = []
    for item in items:
        try:
            outcomes.extend(write_batch(lambda item=item: [item]))
        except Exception as error:  # noqa: BLE001 - that item's failure, returned to it
            outcomes.append(error)
    return outcomes
