"""`lead-poller status`: where lead-poller stands, from the state database alone (no network).

`snapshot()` builds one JSON document (its keys are documented in the README, "status --json", and a
test keeps the two in step); `render()` turns it into the human summary. The metrics endpoint
(`metrics.py`) serves the same document's numbers, so `status --json` and Prometheus never disagree.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from poller.ledger import FAILED, SKIPPED, StateReader

DOCUMENT_VERSION = 1  # bump when a key changes meaning or disappears; adding keys keeps it
TOP_CODES = 10
EXAMPLE_USERS = 3
UPCOMING_RETRIES = 10
SALESFORCE_USAGE_WARNING = 0.9

# Running totals (ledger `totals` names) that are plain counts, in the document's order.
COUNT_TOTALS = ("events_read", "login_events", "new_users", "users_worked", "leads_created", "leads_reused", "already_flagged", "written_back")
LABELLED_TOTALS = ("cycles", "skipped", "failed", "retrying", "rate_limited")


def iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _float(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 3)


def snapshot(state_path: Path, *, clock: Callable[[], float] = time.time, stall_after_seconds: float | None = None) -> dict[str, Any] | None:
    """The status document, or None when there is no state database yet.

    `stall_after_seconds` (the daemon's watchdog limit) decides when the age of the last successful
    cycle deserves attention.
    """
    reader = StateReader.open(state_path)
    if reader is None:
        return None
    with reader:
        now = clock()
        meta = reader.meta()
        cycles = reader.cycles()
        totals = reader.totals()
        users = reader.counts()
        retries = reader.retry_queue(now, limit=UPCOMING_RETRIES)
        failures = reader.reasons(FAILED, limit=TOP_CODES, examples=EXAMPLE_USERS)
        skips = reader.reasons(SKIPPED, limit=TOP_CODES, examples=EXAMPLE_USERS)
        schema_version = reader.schema_version

    newest_event_at = _float(meta.get("newest_event_at"))
    last_ok_at = _float(meta.get("last_ok_cycle_at"))
    usage = _salesforce_usage(meta.get("salesforce_api_usage"))
    document: dict[str, Any] = {
        "version": DOCUMENT_VERSION,
        "generated_at": iso(now),
        "state": {"path": str(state_path), "schema_version": schema_version},
        "checkpoint": {"log_id": meta.get("checkpoint"), "taken_at": iso(_float(meta.get("checkpoint_at")))},
        "log": {
            "newest_event_at": iso(newest_event_at),
            "lag_seconds": None if newest_event_at is None else round(max(0.0, now - newest_event_at), 3),
        },
        "last_cycle": _cycle(cycles["last"]),
        "unfinished_cycle": None if cycles["unfinished"] is None else {"started_at": iso(cycles["unfinished"]["started_at"])},
        "last_successful_cycle": {
            "finished_at": iso(last_ok_at),
            "age_seconds": None if last_ok_at is None else round(max(0.0, now - last_ok_at), 3),
        },
        "users": users,
        "failures": failures,
        "skips": skips,
        "retries": {**retries, "next": [{**r, "next_attempt_at": iso(r["next_attempt_at"])} for r in retries["next"]]},
        "salesforce_api": usage,
        "totals": _totals(totals),
    }
    document["attention"] = _attention(document, now=now, stall_after_seconds=stall_after_seconds, unfinished_started=cycles["unfinished"])
    return document


def _cycle(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    try:
        summary = json.loads(row["summary"] or "{}")
    except ValueError:
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    counts = {name: summary.get(name, 0) for name in COUNT_TOTALS}
    for name in ("skipped", "failed", "retrying"):
        value = summary.get(name)
        counts[name] = value if isinstance(value, dict) else {}
    return {
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        # The cycle's own measure (the one the totals add up), else the ledger's timestamps.
        "duration_seconds": summary.get("duration_seconds", round(row["finished_at"] - row["started_at"], 3)),
        "outcome": row["outcome"] or "unknown",
        "counts": counts,
        "ingest_error": summary.get("ingest_error"),
        "salesforce_paused": summary.get("salesforce_paused"),
    }


def _salesforce_usage(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw) if raw else None
        return {"used": int(value["used"]), "limit": int(value["limit"]), "seen_at": iso(float(value["seen_at"]))}
    except (ValueError, TypeError, KeyError):
        return None


def _totals(raw: dict[tuple[str, str], float]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: 0 for name in COUNT_TOTALS}
    totals["cycle_seconds"] = 0
    for name in LABELLED_TOTALS:
        totals[name] = {}
    for (name, label), value in sorted(raw.items()):
        if name in LABELLED_TOTALS:
            totals[name][label] = _number(value)
        elif name in totals:
            totals[name] = _number(value)
    return totals


def _attention(document: dict[str, Any], *, now: float, stall_after_seconds: float | None, unfinished_started: dict[str, Any] | None) -> list[str]:
    """What a person should look at, in plain words; empty when all is well."""
    notes = []
    last = document["last_cycle"]
    if last is None:
        notes.append("no cycle has finished yet")
    elif last["outcome"] == "fatal":
        notes.append("the last cycle stopped on an error that needs a person (see the log's 'fatal' line)")
    age = document["last_successful_cycle"]["age_seconds"]
    if stall_after_seconds and last is not None and (age is None or age > stall_after_seconds):
        since = "ever" if age is None else f"for {_duration(age)}"
        notes.append(f"no fully successful cycle {since} (expected at least every {_duration(stall_after_seconds)})")
    if unfinished_started and stall_after_seconds and now - unfinished_started["started_at"] > stall_after_seconds:
        notes.append(f"a cycle started at {iso(unfinished_started['started_at'])} never finished (stopped hard, or hung)")
    failed = document["users"].get(FAILED, 0)
    if failed:
        notes.append(f"{failed} user(s) failed: see the failure codes; `lead-poller retry --all-failed` once the cause is fixed")
    usage = document["salesforce_api"]
    if usage and usage["limit"] and usage["used"] / usage["limit"] >= SALESFORCE_USAGE_WARNING:
        notes.append(f"Salesforce API usage is at {usage['used'] / usage['limit']:.0%} of the org's daily allowance")
    return notes


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _ago(stamp: str | None, seconds: float | None) -> str:
    if stamp is None:
        return "never"
    return stamp if seconds is None else f"{stamp} ({_duration(seconds)} ago)"


def _counts_line(counts: dict[str, Any]) -> str:
    parts = [
        f"{counts['events_read']} events",
        f"{counts['login_events']} logins",
        f"{counts['leads_created']} leads created",
        f"{counts['leads_reused']} reused",
        f"{sum(counts['skipped'].values())} skipped",
        f"{sum(counts['failed'].values())} failed",
        f"{sum(counts['retrying'].values())} to retry",
    ]
    return ", ".join(parts)


def render(document: dict[str, Any]) -> str:
    """The human summary of a status document."""
    lines = [f"lead-poller status of {document['state']['path']} at {document['generated_at']}"]

    def row(label: str, value: str) -> None:
        lines.append(f"  {label:<22} {value}")

    checkpoint = document["checkpoint"]
    row("checkpoint", f"{checkpoint['log_id']} (moved {checkpoint['taken_at']})" if checkpoint["log_id"] else "none yet (the first cycle sets it from [auth0] start_from)")
    log = document["log"]
    row("newest event read", _ago(log["newest_event_at"], log["lag_seconds"]))
    last = document["last_cycle"]
    if last is None:
        row("last cycle", "none finished yet")
    else:
        row("last cycle", f"{last['outcome']}, started {last['started_at']}, took {last['duration_seconds']} s")
        row("", _counts_line(last["counts"]))
        if last["ingest_error"]:
            row("", f"log reading paused: {last['ingest_error']}")
        if last["salesforce_paused"]:
            row("", f"Salesforce writes paused: {last['salesforce_paused']}")
    if document["unfinished_cycle"]:
        row("running cycle", f"started {document['unfinished_cycle']['started_at']} (or cut short by a crash)")
    ok = document["last_successful_cycle"]
    row("last successful cycle", _ago(ok["finished_at"], ok["age_seconds"]))
    users = document["users"]
    row("users", ", ".join(f"{users[s]} {s}" for s in ("recorded", "pending", "skipped", "failed")))
    for title, entries in (("failure codes", document["failures"]), ("skip reasons", document["skips"])):
        if not entries:
            row(title, "none")
        for i, entry in enumerate(entries):
            examples = ", ".join(entry["example_user_ids"])
            row(title if i == 0 else "", f"{entry['code']}: {entry['users']} (e.g. {examples})")
    retries = document["retries"]
    row("retries", f"{retries['due_now']} due now, {retries['waiting']} waiting, {retries['in_flight']} with a write in flight")
    for entry in retries["next"]:
        row("", f"{entry['next_attempt_at']}  {entry['user_id']}  {entry['code']} (attempt {entry['attempts']})")
    usage = document["salesforce_api"]
    if usage:
        share = f" ({usage['used'] / usage['limit']:.1%})" if usage["limit"] else ""
        row("salesforce api usage", f"{usage['used']} of {usage['limit']} a day{share}, seen {usage['seen_at']}")
    else:
        row("salesforce api usage", "not seen yet")
    totals = document["totals"]
    cycles = ", ".join(f"{n} {outcome}" for outcome, n in totals["cycles"].items()) or "none"
    row("since the state began", f"cycles: {cycles}; {totals['leads_created']} leads created, {totals['leads_reused']} reused, {totals['written_back']} flagged in Auth0")
    lines.append("")
    if document["attention"]:
        lines.append("Needs attention:")
        lines.extend(f"  - {note}" for note in document["attention"])
    else:
        lines.append("Nothing needs attention.")
    return "\n".join(lines)
