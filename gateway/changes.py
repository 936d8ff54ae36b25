"""Applying a status change to one target: forward only, with its message_updated event."""

from __future__ import annotations

import enum

import msgspec

from gateway import events
from gateway.models import EventType, TargetStatus, advance_status
from gateway.store import TargetRef, Tx


class Outcome(enum.StrEnum):
    """What a callback did; also the `outcome` label of the callback metric."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"  # a report that would move a status backwards, or repeats one
    UNROUTED = "unrouted"  # inbound SMS to a number nobody owns, kept for the operator
    EARLY = "early"  # a report for a send not yet recorded, applied once it is
    BUFFERED = "buffered"  # one part of a concatenated inbound SMS, waiting for the rest
    IGNORED = "ignored"  # an authentic callback with nothing to track
    FAILED = "failed"  # could not be applied (a bug, logged); skipped so later ones go on


class Change(msgspec.Struct, frozen=True):
    status: TargetStatus
    carrier_status: str = ""
    error_code: str = ""
    parts: int | None = None


async def apply_change(
    tx: Tx,
    ref: TargetRef,
    change: Change,
    now: str,
    *,
    dispatch_done: bool,
    dlr_deadline_at: str | None = None,
) -> bool:
    """Move a target forward (never back) and queue message_updated; False if nothing moved.

    `dlr_deadline_at` applies when the target becomes `sent`: when its final report is due.
    """
    # One read gives the target and the message its event carries (updated in memory below).
    message = await tx.get_message(ref.message_id)
    if message is None or ref.idx >= len(message.targets):
        return False
    target = message.targets[ref.idx]
    status = advance_status(target.status, change.status)
    if status is None:
        if dispatch_done:
            await tx.clear_dispatch(ref)
        return False
    # A carrier's report speaks for itself: its code replaces an earlier one (a delivered after an
    # "unknown, code 1" has no error). A gateway timer's change keeps the carrier's last words.
    reported = bool(change.carrier_status)
    updated = msgspec.structs.replace(
        target,
        status=status,
        tm_update=now,
        carrier_status=change.carrier_status if reported else target.carrier_status,
        error_code=change.error_code if reported else target.error_code,
        parts=change.parts or target.parts,
    )
    deadline = dlr_deadline_at if status is TargetStatus.SENT else None
    await tx.update_target(ref, updated, dispatch_done=dispatch_done, dlr_deadline_at=deadline)
    targets = list(message.targets)
    targets[ref.idx] = updated
    message = msgspec.structs.replace(message, targets=tuple(targets), tm_update=now)
    await events.notify(tx, EventType.MESSAGE_UPDATED, message, now)
    return True


def aggregate_parts(statuses: list[str]) -> TargetStatus | None:
    """A multi-part target: failed when any part failed, delivered when all are, dlr_timeout when
    every part has its last word and some said "unknown"; else nothing new yet."""
    if TargetStatus.FAILED.value in statuses:
        return TargetStatus.FAILED
    if not statuses:
        return None
    if all(status == TargetStatus.DELIVERED.value for status in statuses):
        return TargetStatus.DELIVERED
    settled = (TargetStatus.DELIVERED.value, TargetStatus.DLR_TIMEOUT.value)
    if all(status in settled for status in statuses):
        return TargetStatus.DLR_TIMEOUT
    return None
