"""`--dry-run`: the real cycle, run against a throwaway copy of the state, with writes that are recorded
instead of sent.

Reads stay real (tokens, log pages, profiles, the Lead describe, SOQL lookups of leads and contacts),
so every decision is the one a real run would take now. The three writes are replaced:

- the state database: an in-memory copy (`Ledger.scratch_copy`); the file is not touched;
- the Salesforce lead write: `DryRunSink` keeps each payload and answers as if the lead was created;
- the Auth0 write-back: `DryRunDirectory` keeps the PATCH body it would have sent.

Afterwards `decisions` compares the copy's ledger rows before and after the run: one line per user
whose row changed, with the exact lead payload for each lead that would be created. The lines are
printed as JSON on stdout (the log goes to stderr in a dry run), unmasked: showing the exact payload is
the point, so keep the output out of shared logs.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping, Sequence, TextIO

from poller.ledger import FAILED, PENDING, RECORDED, SKIPPED, STEP_WRITE_BACK, UserRow
from poller.salesforce_sink import LeadWrite, WriteResult


class DryRunSink:
    """A LeadSink that reads through to Salesforce and records the writes."""

    def __init__(self, sink: Any, *, external_id_field: str | None = None) -> None:
        self._sink = sink
        self._external_id_field = external_id_field
        self.payloads: dict[str, dict[str, Any]] = {}  # the stand-in lead id -> the record that would be sent

    def describe_lead(self) -> dict[str, Any]:
        return self._sink.describe_lead()

    def find_leads(self, emails: Iterable[str]) -> dict[str, str]:
        return self._sink.find_leads(emails)

    def find_contacts(self, emails: Iterable[str]) -> dict[str, str]:
        return self._sink.find_contacts(emails)

    def write_leads(self, leads: Sequence[LeadWrite]) -> list[WriteResult]:
        results = []
        for lead in leads:
            lead_id = f"(new lead {len(self.payloads) + 1})"
            record = dict(lead.fields)
            if self._external_id_field:
                record[self._external_id_field] = lead.key
            self.payloads[lead_id] = record
            results.append(WriteResult("created", lead_id=lead_id))
        return results


class DryRunDirectory:
    """A UserDirectory that reads profiles from Auth0 and records the write-backs."""

    def __init__(self, directory: Any) -> None:
        self._directory = directory
        self.patches: dict[str, dict[str, Any]] = {}

    def search_users(self, user_ids: Iterable[str]) -> Mapping[str, dict[str, Any]]:
        return self._directory.search_users(user_ids)

    def get_users(self, user_ids: Iterable[str]) -> Mapping[str, dict[str, Any] | Exception]:
        return self._directory.get_users(user_ids)

    def write_backs(self, pairs: Iterable[tuple[str, str]]) -> dict[str, Exception | None]:
        outcomes: dict[str, Exception | None] = {}
        for user_id, lead_id in pairs:
            self.patches[user_id] = {"app_metadata": {"recordedAsLead": True, "salesforceLeadId": lead_id}}
            outcomes[user_id] = None
        return outcomes


def decisions(before: Mapping[str, UserRow], after: Iterable[UserRow], sink: DryRunSink, directory: DryRunDirectory) -> Iterator[dict[str, Any]]:
    """One decision per user whose ledger row the run changed (or created), in ledger order."""
    for row in after:
        if before.get(row.user_id) == row:
            continue
        line: dict[str, Any] = {"user_id": row.user_id}
        if row.status == RECORDED and row.reason == "already_flagged":
            line["decision"] = "already_flagged"
        elif row.status == RECORDED and row.lead_id in sink.payloads:
            line.update(decision="create_lead", lead=sink.payloads[row.lead_id], write_back=directory.patches.get(row.user_id))
        elif row.status == RECORDED:
            line.update(decision="reuse_lead", lead_id=row.lead_id, write_back=directory.patches.get(row.user_id))
        elif row.status == SKIPPED:
            line.update(decision="skip", reason=row.reason)
        elif row.status == FAILED:
            line.update(decision="fail", code=row.reason)
        elif row.status == PENDING and (row.attempts or row.reason or row.step == STEP_WRITE_BACK):
            line.update(decision="retry_later", code=row.reason)
        else:
            line["decision"] = "pending"  # not worked in this run (not due yet, or past --max-leads)
        yield line


def print_decisions(lines: Iterable[dict[str, Any]], out: TextIO) -> Counter:
    """Print each decision as one JSON line, then a summary line; returns the counts."""
    counts: Counter = Counter()
    for line in lines:
        counts[line["decision"]] += 1
        print(json.dumps({"dry_run": line.pop("decision"), **line}, ensure_ascii=False, sort_keys=False), file=out)
    print(json.dumps({"dry_run": "summary", "decisions": dict(sorted(counts.items())), "written": "nothing"}), file=out)
    out.flush()
    return counts
