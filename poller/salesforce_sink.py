"""The only module that talks to Salesforce: the token, the lead lookup, and lead writes.

simple-salesforce does the REST calls, in its "direct" mode (we hand it a token), because its own
client-credentials login cannot be used as it is (shared/reference/salesforce.md §2):
- it builds the token URL as `https://{domain}.salesforce.com/...`, so a My Domain host given in
  full, a sandbox host, or any other host:port cannot be expressed;
- its refresh-on-401 path is unbounded in `SFType`, drops extra headers (the duplicate-rule
  header) on the retry, and crashes on a 401 whose body is not a JSON list;
- it sets no timeouts anywhere.
So the token is fetched here (one POST, form-encoded), the `requests.Session` carries the CA bundle
and timeouts (a partial on `session.request` covers every call simple-salesforce makes), and a 401
leads to exactly one new token.

Leads are written in batches of up to 200 with sObject Collections (`allOrNone: false`), one API
call per batch; each record's own result is mapped through the same table as a single write.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TypeVar
from urllib.parse import quote

import requests
from simple_salesforce import Salesforce, format_external_id, format_soql
from simple_salesforce.exceptions import SalesforceError, SalesforceMalformedRequest, SalesforceMoreThanOneRecord, SalesforceResourceNotFound

from poller import failures
from poller.config import HttpConfig, SalesforceConfig
from poller.errors import DailyLimitReached, FatalError, Interrupted, PermanentError, RetriableError
from poller.failures import Next
from poller.logs import get_logger, register_secret
from poller.pacing import Interrupt

T = TypeVar("T")
log = get_logger("poller.salesforce")

BATCH = 200  # sObject Collections' maximum
MAX_QUERY_URL = 12_000  # stay well inside the 16,384-byte URI limit of a GET
# Our lookups ask for at most 200 addresses: a few pages at the very most. An answer that keeps
# saying "more" past this is looping, and would spend the org's daily allowance in seconds.
MAX_QUERY_PAGES = 20
LOOKUP_SOQL = "SELECT Id, Email FROM Lead WHERE IsConverted = false AND Email IN {}"
LOOKUP_ONE_SOQL = "SELECT Id, Email FROM Lead WHERE IsConverted = false AND Email = {}"
CONTACT_SOQL = "SELECT Id, Email FROM Contact WHERE Email IN {}"
CONTACT_ONE_SOQL = "SELECT Id, Email FROM Contact WHERE Email = {}"
# The records a duplicate rule matched, to see whether they are the same person (the same email).
MATCHED_SOQL = {"Lead": "SELECT Id, Email FROM Lead WHERE IsConverted = false AND Id IN {}", "Contact": "SELECT Id, Email FROM Contact WHERE Id IN {}"}


_NO_COLLECTIONS = object()


@dataclass(frozen=True)
class LeadWrite:
    """One lead to write; `key` is the Auth0 user id (also the external id, when one is configured)."""

    key: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class WriteResult:
    """A record's outcome. `lead_id` is set for created/updated/adopted; `error` for failures."""

    outcome: str  # created | updated | adopted | duplicate_skipped | existing_contact | error
    lead_id: str | None = None
    error: Exception | None = None
    # (entity type, record id) a duplicate rule matched: only on the sink's own "duplicate" outcome,
    # which write_leads settles into one of the above before it returns.
    matches: tuple[tuple[str, str], ...] = ()


def _first_error(content: Any) -> dict[str, Any]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0]
    if isinstance(content, dict):
        return content
    return {}


def _code_of(error: dict[str, Any]) -> str | None:
    code = error.get("errorCode") or error.get("statusCode")
    return code if isinstance(code, str) else None


def _describe(error: dict[str, Any], fallback: Any = None) -> str:
    message = error.get("message")
    if isinstance(message, str) and message:
        return message.strip()[:300]
    text = str(fallback or "").strip()
    return text[:200] if text else "no details"


class SalesforceSink:
    def __init__(self, config: SalesforceConfig, http: HttpConfig, *, interrupt: Interrupt, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.interrupt = interrupt
        self.clock = clock
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "lead-poller"
        # simple-salesforce passes no timeout anywhere, and every request it makes goes through
        # session.request. `verify` goes there too: requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE
        # override a session's own `verify` (psf/requests#3829), which would ignore [http] ca_bundle.
        verify: str | bool = str(http.ca_bundle) if http.ca_bundle else True
        self.session.request = functools.partial(  # type: ignore[method-assign]
            self.session.request, timeout=(http.connect_timeout_seconds, http.timeout_seconds), verify=verify
        )
        self._sf: Salesforce | None = None
        self._collections = True  # until the org says it has no sObject Collections
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.tokens_fetched = 0
        self.api_usage: tuple[int, int] | None = None
        self.rate_limited = 0  # answers that said "too many": 429, REQUEST_LIMIT_EXCEEDED

    def close(self) -> None:
        self.session.close()

    # --- token --------------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def _connect(self) -> Salesforce:
        url = f"https://{self.config.domain}/services/oauth2/token"
        data = {"grant_type": "client_credentials", "client_id": self.config.client_id, "client_secret": self.config.client_secret}
        self._count("token")
        try:
            response = self.session.post(url, data=data)
        except requests.Timeout:
            raise self._translate("token", "timeout", None, "timed out") from None
        except requests.RequestException as exc:
            raise self._unreachable("token", exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body if isinstance(body, dict) else {}
            code = error.get("error") if isinstance(error.get("error"), str) else None
            detail = error.get("error_description") or (response.text[:200] if body is None else "no details")
            raise self._translate("token", str(response.status_code), code, f"{code or 'error'}: {detail}")
        token, instance_url = body.get("access_token"), body.get("instance_url")
        if not isinstance(token, str) or not isinstance(instance_url, str) or not instance_url.startswith("https://"):
            raise RetriableError("Salesforce answered the token request without an access_token or an https instance_url", code="salesforce_unexpected")
        register_secret(token)
        self.tokens_fetched += 1
        return Salesforce(instance_url=instance_url, session_id=token, session=self.session, version=self.config.api_version)

    def connect(self) -> None:
        """Get a token now, if none is held (`check` tells a token problem from an API one)."""
        self._client()

    def _client(self, *, renew: bool = False) -> Salesforce:
        with self._lock:
            if self._sf is None or renew:
                self._sf = self._connect()
            return self._sf

    # --- calls --------------------------------------------------------------------------------

    def _translate(self, operation: str, status: str, vendor_code: str | None, detail: str) -> Exception:
        rule = failures.lookup("salesforce", operation, status, vendor_code)
        if rule.next is Next.DAILY_LIMIT:
            return DailyLimitReached(f"Salesforce daily API limit reached ({detail})")
        if rule.next is Next.FATAL:
            return FatalError(f"Salesforce {operation}: {rule.explanation} ({detail})", code=rule.code, exit_code=rule.exit_code)
        if rule.next is Next.REFRESH:
            return FatalError(f"Salesforce rejected a freshly issued token ({detail}); check the Run As user's API access", code=rule.code, exit_code=rule.exit_code)
        if rule.next is Next.PERMANENT:
            return PermanentError(f"Salesforce {operation}: {detail}", code=rule.code)
        answer = f"HTTP {status}" if status.isdigit() else "no answer"
        return RetriableError(f"Salesforce {operation}: {detail} ({answer})", code=rule.code, can_fail=rule.next is not Next.OUTAGE)

    def _unreachable(self, operation: str, exc: requests.RequestException) -> Exception:
        """A connection that failed: the host and the cause, and whether it is a trust problem."""
        reason = str(exc.__context__ or exc).strip()[:200] or "no details"
        status = "tls" if failures.untrusted_certificate(exc) else "connection"
        return self._translate(operation, status, None, f"{type(exc).__name__} to {self.config.domain}: {reason}")

    def _call(self, operation: str, send: Callable[[Salesforce], T]) -> T:
        """One API call: a new token once on 401, everything else translated through the table."""
        if self.interrupt.stopping:  # the deadline is the cycle's business, between batches
            raise Interrupted()
        renewed = False
        while True:
            sf = self._client()
            self._count(operation)
            try:
                result = send(sf)
                self._note_usage(sf)
                return result
            except SalesforceError as exc:
                self._note_usage(sf)
                error = _first_error(exc.content)
                code = _code_of(error)
                status = str(exc.status)
                if code == "REQUEST_LIMIT_EXCEEDED" and "concurrent" in _describe(error).lower():
                    # The same code for too many long-running requests at once (ConcurrentPerOrgLongTxn):
                    # a short wait, not the daily allowance. Its message is UNCONFIRMED (reference §4).
                    code = "REQUEST_LIMIT_EXCEEDED (concurrent)"
                if status == "429" or (code or "").startswith("REQUEST_LIMIT_EXCEEDED"):
                    self.rate_limited += 1
                if status == "401" and not renewed:
                    renewed = True
                    self._client(renew=True)
                    continue
                raise self._translate(operation, status, code, _describe(error, exc.content)) from None
            except requests.Timeout:
                raise self._translate(operation, "timeout", None, "timed out") from None
            except ValueError:  # a 2xx whose body is not JSON (requests' JSONDecodeError is one too)
                raise self._translate(operation, "5xx", None, "the answer was not JSON") from None
            except (KeyError, TypeError, AttributeError) as exc:
                # JSON of a shape simple-salesforce does not expect (a bare number, an object
                # without the keys it indexes): an unexpected answer, not a crash.
                raise self._translate(operation, "*", None, f"an answer simple-salesforce could not read ({type(exc).__name__}: {exc})"[:300]) from None
            except requests.RequestException as exc:
                raise self._unreachable(operation, exc) from None

    def _note_usage(self, sf: Salesforce) -> None:
        usage = getattr(sf, "api_usage", {}).get("api-usage")
        if usage is not None:
            self.api_usage = (int(usage.used), int(usage.total))

    # --- lookups ------------------------------------------------------------------------------

    def describe_lead(self) -> dict[str, Any]:
        """The org's Lead describe, as Salesforce sends it (fields with type, length, createable,
        nillable, externalId, unique, picklist values). Read-only; one API call."""
        answer = self._call("lead_describe", lambda sf: sf.restful("sobjects/Lead/describe"))
        if not isinstance(answer, dict) or not isinstance(answer.get("fields"), list):
            raise RetriableError("Salesforce answered the Lead describe without a field list", code="salesforce_unexpected")
        return answer

    def find_leads(self, emails: Iterable[str]) -> dict[str, str]:
        """Open (unconverted) leads by email, lower-cased email -> lead id. SOQL `=`/`IN` on strings
        is case-insensitive, so one lead answers for every spelling of the address."""
        return self._find_by_email("lead_lookup", LOOKUP_SOQL, LOOKUP_ONE_SOQL, emails)

    def find_contacts(self, emails: Iterable[str]) -> dict[str, str]:
        """Contacts by email, lower-cased email -> contact id (for `[lead] skip_existing_contacts`)."""
        return self._find_by_email("contact_lookup", CONTACT_SOQL, CONTACT_ONE_SOQL, emails)

    def _find_by_email(self, operation: str, template: str, template_one: str, emails: Iterable[str]) -> dict[str, str]:
        unique = sorted({e.lower() for e in emails if e})
        found: dict[str, str] = {}
        for chunk in _query_chunks(unique, template):
            # One address is asked with `=`, the plainest SOQL every Salesforce-compatible API knows.
            soql = format_soql(template_one, chunk[0]) if len(chunk) == 1 else format_soql(template, chunk)
            for record in self._query(operation, soql):
                email, lead_id = record.get("Email"), record.get("Id")
                if isinstance(email, str) and isinstance(lead_id, str):
                    # Several records with one address: the lowest id, the oldest, answers for all.
                    known = found.get(email.lower())
                    found[email.lower()] = lead_id if known is None else min(known, lead_id)
        return found

    def _query(self, operation: str, soql: str) -> list[dict[str, Any]]:
        """Every record a SOQL query answers, following `nextRecordsUrl` at most MAX_QUERY_PAGES times
        (simple-salesforce's query_all follows it without end, and fails on a page without `records`)."""
        result = self._call(operation, lambda sf: sf.query(soql))
        records: list[dict[str, Any]] = []
        for page in range(MAX_QUERY_PAGES):
            if not isinstance(result, dict) or not isinstance(result.get("records"), list):
                raise RetriableError(f"Salesforce answered the {operation} query without a list of records", code="salesforce_unexpected")
            records.extend(r for r in result["records"] if isinstance(r, dict))
            next_url = result.get("nextRecordsUrl")
            if result.get("done", True) is not False or not isinstance(next_url, str) or not next_url.startswith("/"):
                return records
            if page + 1 < MAX_QUERY_PAGES:
                result = self._call(operation, lambda sf: sf.query_more(next_url, identifier_is_url=True))
        raise RetriableError(f"Salesforce answered the {operation} query with more than {MAX_QUERY_PAGES} pages", code="salesforce_unexpected")

    # --- writes -------------------------------------------------------------------------------

    def write_leads(self, leads: Sequence[LeadWrite]) -> list[WriteResult]:
        """Create (or, with an external id field, upsert) leads, 200 per call; one result per lead, in order."""
        results: list[WriteResult] = []
        for start in range(0, len(leads), BATCH):
            batch = leads[start : start + BATCH]
            results.extend(self._settle_duplicates(batch, self._write_batch(batch)))
        return results

    def _settle_duplicates(self, batch: Sequence[LeadWrite], results: list[WriteResult]) -> list[WriteResult]:
        """`on_duplicate = "adopt"`: a record a duplicate rule matched is adopted only when it is the
        same person, an open Lead (or a Contact) with the same email. Our lookup by email found none
        just before the write, so a match is either a lead written since (a race) or, through the
        rule's fuzzy name and company criteria, somebody else, whose lead must not become this
        user's. A duplicate reported without the matched records (possible inside a Collections
        answer, shared/reference/salesforce.md §5) is sent again alone: the single-record endpoint
        names them."""
        results = list(results)
        for index, result in enumerate(results):
            if result.outcome == "duplicate" and not result.matches and len(batch) > 1:
                try:
                    results[index] = self._write_one(batch[index])
                except (RetriableError, PermanentError) as exc:  # the batch's other results stand
                    results[index] = WriteResult("error", error=exc)
        pending = [i for i, r in enumerate(results) if r.outcome == "duplicate"]
        if not pending:
            return results
        try:
            emails = self._emails_of({match for i in pending for match in results[i].matches})
        except (RetriableError, PermanentError) as exc:
            for index in pending:
                results[index] = WriteResult("error", error=exc)
            return results
        for index in pending:
            email = batch[index].fields.get("Email")
            email = email.lower() if isinstance(email, str) else None
            same = [(entity, record_id) for entity, record_id in results[index].matches if email and emails.get(record_id) == email]
            leads = [record_id for entity, record_id in same if entity == "Lead"]
            if leads:
                results[index] = WriteResult("adopted", lead_id=leads[0])
            elif same:
                results[index] = WriteResult("existing_contact")
            else:
                results[index] = WriteResult("error", error=results[index].error)
        return results

    def _emails_of(self, matches: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Record id -> lower-cased email of the matched open Leads and Contacts."""
        ids: dict[str, list[str]] = {}
        for entity, record_id in matches:
            if entity in MATCHED_SOQL:
                ids.setdefault(entity, []).append(record_id)
        found: dict[str, str] = {}
        for entity, record_ids in sorted(ids.items()):
            for chunk in _query_chunks(sorted(set(record_ids)), MATCHED_SOQL[entity]):
                soql = format_soql(MATCHED_SOQL[entity], chunk)
                for record in self._query("lead_lookup" if entity == "Lead" else "contact_lookup", soql):
                    if isinstance(record.get("Id"), str) and isinstance(record.get("Email"), str):
                        found[record["Id"]] = record["Email"].lower()
        return found

    def _duplicate_header(self) -> dict[str, str]:
        return {"Sforce-Duplicate-Rule-Header": "allowSave=true"} if self.config.on_duplicate == "allow_save" else {}

    def _write_one(self, lead: LeadWrite) -> WriteResult:
        """One lead by the single-record endpoints (`POST sobjects/Lead`, or the upsert
        `PATCH sobjects/Lead/<field>/<url-encoded user id>`): same call count as a batch of one, and the
        plainest API there is. A record's own refusal is mapped exactly as inside a Collections answer."""
        external = self.config.external_id_field
        headers = self._duplicate_header()

        def send(sf: Salesforce) -> Any:
            try:
                if external:
                    # Auth0 ids contain '|': format_external_id URL-encodes the value for the path.
                    response = sf.Lead.upsert(format_external_id(external, lead.key), lead.fields, raw_response=True, headers=headers)
                    return response.json() if response.content else None
                return sf.Lead.create(lead.fields, headers=headers)
            except SalesforceMalformedRequest as exc:
                if not (isinstance(exc.content, list) and exc.content and all(isinstance(e, dict) for e in exc.content)):
                    raise  # not Salesforce's error list (a gateway's HTML 400): the request failed, not the record
                return {"success": False, "errors": exc.content}
            except SalesforceMoreThanOneRecord:
                return {"success": False, "errors": [{"statusCode": "DUPLICATE_EXTERNAL_ID", "message": "more than one lead has this external id"}]}

        answer = self._call("lead_batch", send)
        return self._result(answer if isinstance(answer, dict) else None)

    def _write_batch(self, batch: Sequence[LeadWrite]) -> list[WriteResult]:
        if len(batch) == 1 or not self._collections:
            return [self._write_one(lead) for lead in batch]
        external = self.config.external_id_field
        records = []
        for lead in batch:
            record: dict[str, Any] = {"attributes": {"type": "Lead"}, **lead.fields}
            if external:
                record[external] = lead.key
            records.append(record)
        body = {"allOrNone": False, "records": records}
        headers = self._duplicate_header()
        if external:
            path = f"composite/sobjects/Lead/{quote(external, safe='')}"
            answer = self._call("lead_batch", lambda sf: sf.restful(path, method="PATCH", json=body, headers=headers))
        else:

            def send(sf: Salesforce) -> Any:
                try:
                    return sf.restful("composite/sobjects", method="POST", json=body, headers=headers)
                except SalesforceResourceNotFound:
                    return _NO_COLLECTIONS

            answer = self._call("lead_batch", send)
            if answer is _NO_COLLECTIONS:
                # An API without sObject Collections (an old version, a gateway, a compatible fake):
                # one call per lead from now on; nothing was written by the refused batch.
                log.warning("salesforce_collections_unavailable", note="writing leads one by one")
                self._collections = False
                return [self._write_one(lead) for lead in batch]
        answers = answer if isinstance(answer, list) else []
        results = []
        for index in range(len(batch)):
            item = answers[index] if index < len(answers) and isinstance(answers[index], dict) else None
            results.append(self._result(item))
        return results

    def _result(self, item: dict[str, Any] | None) -> WriteResult:
        if item is None:
            return WriteResult("error", error=RetriableError("Salesforce returned no result for this record", code="salesforce_unexpected"))
        lead_id = item.get("id")
        if item.get("success") is True and isinstance(lead_id, str):
            return WriteResult("updated" if item.get("created") is False else "created", lead_id=lead_id)
        errors = item.get("errors")
        error = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        code = _code_of(error)
        if code == "DUPLICATES_DETECTED":
            return self._duplicate(error)
        rule = failures.lookup("salesforce", "lead_write", "400", code)
        fields = error.get("fields")
        field = ",".join(f for f in fields if isinstance(f, str)) if isinstance(fields, list) else None
        message = _describe(error)
        if rule.next in (Next.RETRY, Next.OUTAGE):
            return WriteResult("error", error=RetriableError(f"Salesforce: {message}", code=rule.code, can_fail=rule.next is Next.RETRY))
        if rule.next is Next.FATAL:
            raise FatalError(f"Salesforce lead_write: {rule.explanation} ({message})", code=rule.code, exit_code=rule.exit_code)
        # A row written for this code names it; an unknown code is more use recorded as it is.
        recorded = rule.code if rule.vendor_code else (code or rule.code)
        return WriteResult("error", error=PermanentError(f"Salesforce refused the lead: {message}", code=recorded, field=field or None))

    def _duplicate(self, error: dict[str, Any]) -> WriteResult:
        if self.config.on_duplicate == "skip":
            return WriteResult("duplicate_skipped")
        matches = tuple(_duplicate_matches(error))
        refused = PermanentError(
            f"Salesforce duplicate rule refused the lead: {_describe(error)}"
            + (f"; it matched {len(matches)} record(s) with another email, so none was adopted" if matches else ""),
            code="DUPLICATES_DETECTED",
        )
        if self.config.on_duplicate == "adopt":
            return WriteResult("duplicate", error=refused, matches=matches)  # settled by _settle_duplicates
        return WriteResult("error", error=refused)  # allow_save, refused all the same: a blocking rule


def _duplicate_matches(error: dict[str, Any]) -> list[tuple[str, str]]:
    """(entity type, record id) of every record a duplicate rule matched, best first."""
    found: list[tuple[str, str]] = []
    result = error.get("duplicateResult")
    match_results = result.get("matchResults") if isinstance(result, dict) else None
    for match in match_results if isinstance(match_results, list) else []:
        if not isinstance(match, dict):
            continue
        entity = match.get("entityType")
        for record in match.get("matchRecords") or []:
            inner = record.get("record") if isinstance(record, dict) else None
            record_id = inner.get("Id") if isinstance(inner, dict) else None
            if isinstance(record_id, str):
                kind = entity if isinstance(entity, str) else (inner.get("attributes") or {}).get("type", "")
                found.append((kind, record_id))
    return found


def _query_chunks(values: list[str], template: str) -> Iterable[list[str]]:
    """Split `values` for an `IN (...)` so each query's URL stays inside the GET length limit."""
    base = len(quote(template))
    chunk: list[str] = []
    size = base
    for value in values:
        cost = len(quote(format_soql("{}", value))) + 3  # the quoted literal and its separator
        if chunk and (size + cost > MAX_QUERY_URL or len(chunk) >= BATCH):
            yield chunk
            chunk, size = [], base
        chunk.append(value)
        size += cost
    if chunk:
        yield chunk
