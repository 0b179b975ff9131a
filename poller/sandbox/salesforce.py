"""A Salesforce org over real HTTPS: the OAuth client-credentials token endpoint and the REST calls the
poller makes (SOQL query, Lead create/upsert, sObject Collections, describe, limits).

Wire formats follow /work/shared/reference/salesforce.md: error bodies are JSON arrays of
`{"message","errorCode","fields"}` on single-record calls and `{"statusCode","message","fields"}` inside
collection results; every REST response carries `Sforce-Limit-Info: api-usage=<used>/<limit>`; a bad or
revoked token is a 401 `INVALID_SESSION_ID`; the daily limit is a 403 `REQUEST_LIMIT_EXCEEDED`.

Everything the emulator holds is guarded by `self._lock` (handlers run on many threads).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import string
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import unquote

from .server import Emulator, Recorded, Request, Response
from .soql import SoqlError, compile_query

ORG_ID = "00D000000000001EAA"
USER_ID = "005000000000001AAA"
URI_LIMIT = 16_384  # bytes of path+query beyond which the edge answers 414

_V = r"/services/data/(?P<version>v\d+\.\d+)"
_SOBJECT = r"(?P<sobject>Lead|Contact)"
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+")
_TEXT_TYPES = {"string", "email", "phone", "textarea", "picklist", "url", "id", "reference", "datetime", "date"}

NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
LIMIT_EXCEEDED = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
ROLLED_BACK = (
    "Record rolled back because not all records were valid and the request was using AllOrNone header"
)


def _field(name: str, label: str, type_: str, length: int = 0, **extra: Any) -> dict:
    spec = {
        "name": name,
        "label": label,
        "type": type_,
        "length": length,
        "createable": True,
        "updateable": True,
        "nillable": True,
        "defaultedOnCreate": False,
        "externalId": False,
        "unique": False,
        "caseSensitive": False,
        "custom": False,
        "restrictedPicklist": False,
        "picklistValues": [],
    }
    spec.update(extra)
    return spec


def _picklist(*values: str, default: str | None = None) -> list[dict]:
    return [{"value": v, "label": v, "active": True, "defaultValue": v == default} for v in values]


def _system_fields() -> list[dict]:
    return [
        _field("Id", "Record ID", "id", 18, createable=False, updateable=False, nillable=False,
               defaultedOnCreate=True),
        _field("OwnerId", "Owner ID", "reference", 18, nillable=False, defaultedOnCreate=True),
    ]


def _lead_fields() -> list[dict]:
    return [
        *_system_fields(),
        _field("LastName", "Last Name", "string", 80, nillable=False),
        _field("FirstName", "First Name", "string", 40),
        _field("Email", "Email", "email", 80),
        _field("Company", "Company", "string", 255, nillable=False),
        _field("LeadSource", "Lead Source", "picklist", 40,
               picklistValues=_picklist("Web", "Phone Inquiry", "Partner Referral", "Other", "Auth0")),
        _field("Status", "Status", "picklist", 40, nillable=False, defaultedOnCreate=True,
               picklistValues=_picklist("Open - Not Contacted", "Working - Contacted", "Closed - Converted",
                                        "Closed - Not Converted", default="Open - Not Contacted")),
        _field("Title", "Title", "string", 128),
        _field("Phone", "Phone", "phone", 40),
        _field("City", "City", "string", 40),
        _field("State", "State/Province", "string", 80),
        _field("Country", "Country", "string", 80),
        _field("Description", "Description", "textarea", 32000),
        _field("IsConverted", "Converted", "boolean", 0, createable=False, updateable=False, nillable=False,
               defaultedOnCreate=True),
        _field("CreatedDate", "Created Date", "datetime", 0, createable=False, updateable=False,
               nillable=False, defaultedOnCreate=True),
    ]


def _contact_fields() -> list[dict]:
    return [
        *_system_fields(),
        _field("LastName", "Last Name", "string", 80, nillable=False),
        _field("FirstName", "First Name", "string", 40),
        _field("Email", "Email", "email", 80),
        _field("AccountId", "Account ID", "reference", 18),
        _field("Title", "Title", "string", 128),
        _field("Phone", "Business Phone", "phone", 40),
        _field("CreatedDate", "Created Date", "datetime", 0, createable=False, updateable=False,
               nillable=False, defaultedOnCreate=True),
    ]


_REQUIRED = {"Lead": ("LastName", "Company"), "Contact": ("LastName",)}
_PREFIX = {"Lead": "00Q", "Contact": "003"}
_LABELS = {"Lead": ("Lead", "Leads"), "Contact": ("Contact", "Contacts")}


class _Fail(Exception):
    """One record's failure; rendered with errorCode (single calls) or statusCode (collections)."""

    def __init__(self, code: str, message: str, fields: list[str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.fields, self.extra = code, message, fields, extra

    def single(self) -> dict:
        out: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            out["fields"] = self.fields
        return {**out, **self.extra}

    def collection(self, details: bool = True) -> dict:
        extra = self.extra if details else {k: v for k, v in self.extra.items() if k != "duplicateResult"}
        return {"statusCode": self.code, "message": self.message, "fields": self.fields or [], **extra}


class _Reject(Exception):
    """A whole-request failure (status + body) raised from deep inside a handler."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.response = Response(status, body)


class SalesforceEmulator(Emulator):
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_limit: int = 15000,
        custom_fields: Iterable[dict] = (),
        duplicate_rule: str | None = None,
        clock: Callable[[], float] = time.time,
        session_timeout: float | None = None,
    ) -> None:
        super().__init__()
        if duplicate_rule not in (None, "alert", "block"):
            raise ValueError(f"duplicate_rule must be None, 'alert' or 'block', not {duplicate_rule!r}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_limit = api_limit
        self.api_usage = 0
        self.duplicate_rule = duplicate_rule
        # What the rule matches on: "email" (exact), or "standard", like Salesforce's standard Lead
        # and Contact matching rules, which also match on name and company (fuzzily there; here the
        # same first name, last name and company, case-folded), so a different person can match.
        self.duplicate_match = "email"
        # Whether a DUPLICATES_DETECTED inside an sObject Collections answer carries its
        # duplicateResult: UNCONFIRMED (shared/reference/salesforce.md §5), so tests try both.
        self.collection_duplicate_details = True
        self.clock = clock
        self.session_timeout = session_timeout  # seconds of inactivity after which a token dies; None = never
        self.tokens_issued = 0
        self.issued_tokens: list[str] = []  # every access token and signature handed out (tests look for leaks)
        self.lock_rows = 0
        self.validation_rules: list[Callable[[dict], str | None]] = []
        # Addresses this org refuses although they look like local@domain.tld: Salesforce's exact
        # email rule is UNCONFIRMED (shared/reference/salesforce.md, "Email validation"), so a test
        # names the ones it wants refused, and gets the real INVALID_EMAIL_ADDRESS answer for them.
        self.refused_emails: set[str] = set()
        # sobject -> {field name -> describe spec}; tests may edit specs (e.g. make LeadSource restricted)
        self.fields: dict[str, dict[str, dict]] = {
            "Lead": {f["name"]: f for f in _lead_fields()},
            "Contact": {f["name"]: f for f in _contact_fields()},
        }
        self.leads: dict[str, dict] = {}
        self.contacts: dict[str, dict] = {}
        self._tokens: dict[str, float] = {}  # token -> last use (clock)
        self._counters = {"Lead": 0, "Contact": 0}
        for spec in custom_fields:
            self.add_field(spec)

        self.route("POST", r"/services/oauth2/token", self._token)
        self.route("GET", _V + r"/query/?", self._api(self._query))
        self.route("GET", _V + r"/limits/?", self._api(self._limits))
        self.route("GET", _V + r"/sobjects/" + _SOBJECT + r"/describe/?", self._api(self._describe))
        self.route("POST", _V + r"/sobjects/" + _SOBJECT + r"/?", self._api(self._create))
        self.route("GET", _V + r"/sobjects/" + _SOBJECT + r"/(?P<id>[A-Za-z0-9]{15,18})/?", self._api(self._get))
        self.route("GET", _V + r"/sobjects/" + _SOBJECT + r"/(?P<field>\w+)/(?P<value>.+)",
                   self._api(self._get_by_external_id))
        self.route("PATCH", _V + r"/sobjects/" + _SOBJECT + r"/(?P<field>\w+)/(?P<value>.+)",
                   self._api(self._upsert))
        self.route("POST", _V + r"/composite/sobjects/?", self._api(self._collection_create, min_version=42))
        self.route("PATCH", _V + r"/composite/sobjects/" + _SOBJECT + r"/(?P<field>\w+)/?",
                   self._api(self._collection_upsert, min_version=46))
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            self.route(method, r"/services/data(/.*)?", self._not_found)

    # --- public helpers ---------------------------------------------------------------------------

    def add_field(self, spec: dict, sobject: str = "Lead") -> dict:
        """Add a custom field, e.g. {"name": "Auth0_User_Id__c", "label": "Auth0 User Id", "type": "string",
        "length": 255, "externalId": True, "unique": True}. Picklist values may be plain strings."""
        name = spec["name"]
        if not name.endswith("__c"):
            raise ValueError(f"custom field names end with __c: {name!r}")
        with self._lock:
            if name.lower() in (n.lower() for n in self.fields[sobject]):
                raise ValueError(f"{sobject}.{name} already exists")
            type_ = spec.get("type", "string")
            full = _field(name, spec.get("label", name[:-3].replace("_", " ")), type_,
                          spec.get("length", 255 if type_ in _TEXT_TYPES - {"datetime", "date"} else 0),
                          custom=True)
            full.update({k: v for k, v in spec.items() if k not in ("picklistValues",)})
            full["picklistValues"] = [
                v if isinstance(v, dict) else {"value": v, "label": v, "active": True, "defaultValue": False}
                for v in spec.get("picklistValues", [])
            ]
            self.fields[sobject][name] = full
            return full

    def add_leads(self, records: Iterable[dict]) -> list[str]:
        """Seed Leads directly (no validation); IsConverted may be set to seed converted leads."""
        return self._seed("Lead", records)

    def add_contacts(self, records: Iterable[dict]) -> list[str]:
        return self._seed("Contact", records)

    def expire_sessions(self) -> None:
        """Every token issued so far becomes invalid (an admin revoked them, or the session timed out)."""
        with self._lock:
            self._tokens.clear()

    # --- plumbing ---------------------------------------------------------------------------------

    def common_headers(self, request: Request, response: Response) -> dict[str, str]:
        if request.path.startswith("/services/data/"):
            return {"Sforce-Limit-Info": f"api-usage={self.api_usage}/{self.api_limit}"}
        return {}

    def _store(self, sobject: str) -> dict[str, dict]:
        return self.leads if sobject == "Lead" else self.contacts

    def _new_id(self, sobject: str) -> str:
        self._counters[sobject] += 1
        n, digits = self._counters[sobject], []
        while n:
            n, r = divmod(n, 62)
            digits.append(_BASE62[r])
        return _PREFIX[sobject] + "".join(reversed(digits)).rjust(15, "0")

    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+0000")

    def _canon(self, sobject: str, name: str) -> str | None:
        for canonical in self.fields[sobject]:
            if canonical.lower() == name.lower():
                return canonical
        return None

    def _seed(self, sobject: str, records: Iterable[dict]) -> list[str]:
        ids = []
        with self._lock:
            for rec in records:
                row = {}
                for key, value in rec.items():
                    name = self._canon(sobject, key)
                    if name is None:
                        raise ValueError(f"no field {key!r} on {sobject}")
                    row[name] = value
                row.setdefault("Id", self._new_id(sobject))
                self._defaults(sobject, row)
                self._store(sobject)[row["Id"]] = row
                ids.append(row["Id"])
        return ids

    def _defaults(self, sobject: str, row: dict) -> None:
        row.setdefault("OwnerId", USER_ID)
        row.setdefault("CreatedDate", self._now_iso())
        if sobject == "Lead":
            row.setdefault("IsConverted", False)
            if row.get("Status") in (None, ""):
                row["Status"] = "Open - Not Contacted"

    def _url(self, version: str, sobject: str, id_: str) -> str:
        return f"/services/data/{version}/sobjects/{sobject}/{id_}"

    def _api(self, handler: Callable[[Request], Response], min_version: int = 0) -> Callable[[Request], Response]:
        """The gate in front of every REST route: URI length, version, session, daily limit."""

        def gate(request: Request) -> Response:
            if len(request.raw_path.encode("utf-8")) > URI_LIMIT:
                return Response(414, "414 Request-URI Too Large")
            if float(request.params["version"][1:]) < min_version:
                return Response(404, NOT_FOUND)
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            with self._lock:
                last = self._tokens.get(token) if scheme.lower() in ("bearer", "oauth") else None
                now = self.clock()
                if last is None or (self.session_timeout is not None and now - last > self.session_timeout):
                    self._tokens.pop(token, None)
                    return Response(401, INVALID_SESSION)
                self._tokens[token] = now
                if self.api_usage + 1 > self.api_limit:
                    return Response(403, LIMIT_EXCEEDED)
                self.api_usage += 1
                try:
                    return handler(request)
                except _Reject as reject:
                    return reject.response

        return gate

    def _not_found(self, request: Request) -> Response:
        # Salesforce's own 404 body, but still recorded as unexpected: nothing should call these paths.
        with self._lock:
            self.unexpected.append(
                Recorded(request.method, request.path, request.query, request.headers, request.body, 404)
            )
        return Response(404, NOT_FOUND)

    @staticmethod
    def _body(request: Request) -> Any:
        try:
            return json.loads(request.body.decode("utf-8")) if request.body else None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Reject(400, [{"message": f"Unexpected character: {exc}", "errorCode": "JSON_PARSER_ERROR"}])

    # --- OAuth --------------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        form = request.form()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and client_id is None:
            try:
                client_id, _, client_secret = base64.b64decode(value).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = client_secret = None
        no_store = {"Cache-Control": "no-cache,must-revalidate,max-age=0,no-store,private"}
        if form.get("grant_type") != "client_credentials":
            body = {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
            return Response(400, body, no_store)
        if client_id != self.client_id:
            return Response(400, {"error": "invalid_client_id", "error_description": "client identifier invalid"},
                            no_store)
        if not secrets.compare_digest((client_secret or "").encode(), self.client_secret.encode()):
            return Response(400, {"error": "invalid_client", "error_description": "invalid client credentials"},
                            no_store)
        token = "00D000000000001!AR" + "".join(secrets.choice(_BASE62 + "._") for _ in range(94))
        signature = base64.b64encode(secrets.token_bytes(32)).decode()
        with self._lock:
            self._tokens[token] = self.clock()
            self.tokens_issued += 1
            self.issued_tokens += [token, signature]
        return Response(200, {
            "access_token": token,
            "signature": signature,
            "scope": "api",
            "instance_url": f"https://{self.host}",
            "id": f"https://{self.host}/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer",
            "issued_at": str(int(self.clock() * 1000)),
        }, no_store)

    # --- read routes --------------------------------------------------------------------------------

    def _query(self, request: Request) -> Response:
        version = request.params["version"]
        try:
            query = compile_query(request.query.get("q", ""), self.fields)
        except SoqlError as exc:
            return Response(400, [{"message": exc.message, "errorCode": exc.error_code}])
        records = [
            {"attributes": {"type": query.entity, "url": self._url(version, query.entity, row["Id"])},
             **copy.deepcopy(query.project(row))}
            for row in query.rows(self._store(query.entity).values())
        ]
        return Response(200, {"totalSize": len(records), "done": True, "records": records})

    def _limits(self, request: Request) -> Response:
        return Response(200, {"DailyApiRequests": {"Max": self.api_limit,
                                                   "Remaining": max(self.api_limit - self.api_usage, 0)}})

    def _describe(self, request: Request) -> Response:
        sobject = request.params["sobject"]
        label, plural = _LABELS[sobject]
        return Response(200, {
            "name": sobject, "label": label, "labelPlural": plural, "custom": False, "keyPrefix": _PREFIX[sobject],
            "createable": True, "updateable": True, "queryable": True,
            "fields": copy.deepcopy(list(self.fields[sobject].values())),
        })

    def _full_record(self, sobject: str, version: str, row: dict) -> dict:
        out = {"attributes": {"type": sobject, "url": self._url(version, sobject, row["Id"])}}
        out.update({name: copy.deepcopy(row.get(name)) for name in self.fields[sobject]})
        return out

    def _get(self, request: Request) -> Response:
        sobject, id_ = request.params["sobject"], request.params["id"]
        row = self._store(sobject).get(id_)
        if row is None:
            return Response(404, NOT_FOUND)
        return Response(200, self._full_record(sobject, request.params["version"], row))

    def _external(self, request: Request) -> tuple[str, dict, str]:
        """(field name, field spec, value) of a `/sobjects/<Obj>/<Field>/<value>` URL; 404 unless external."""
        sobject = request.params["sobject"]
        raw = request.raw_path.split("?", 1)[0]
        raw_field, _, raw_value = raw.split(f"/sobjects/{sobject}/", 1)[1].partition("/")
        name = self._canon(sobject, unquote(raw_field))
        spec = self.fields[sobject].get(name) if name else None
        if spec is None or not spec.get("externalId"):
            raise _Reject(404, [{
                "message": f"Provided external ID field does not exist or is not accessible: {unquote(raw_field)}",
                "errorCode": "NOT_FOUND",
            }])
        return name, spec, unquote(raw_value)

    def _matches(self, sobject: str, name: str, spec: dict, value: Any) -> list[dict]:
        def same(a: Any) -> bool:
            if a is None or value is None:
                return False
            a, b = str(a), str(value)
            return a == b if spec.get("caseSensitive") else a.casefold() == b.casefold()

        return [row for row in self._store(sobject).values() if same(row.get(name))]

    def _get_by_external_id(self, request: Request) -> Response:
        sobject, version = request.params["sobject"], request.params["version"]
        name, spec, value = self._external(request)
        rows = self._matches(sobject, name, spec, value)
        if not rows:
            return Response(404, NOT_FOUND)
        if len(rows) > 1:
            return Response(300, [self._url(version, sobject, r["Id"]) for r in rows])
        return Response(200, self._full_record(sobject, version, rows[0]))

    # --- record validation --------------------------------------------------------------------------

    @staticmethod
    def _allow_save(request: Request) -> bool:
        header = request.headers.get("sforce-duplicate-rule-header", "")
        for part in re.split(r"[;,]", header):
            key, _, value = part.partition("=")
            if key.strip().lower() == "allowsave" and value.strip().lower() == "true":
                return True
        return False

    @staticmethod
    def _coerce(spec: dict, value: Any) -> Any:
        type_ = spec["type"]
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            token = "START_OBJECT" if isinstance(value, dict) else "START_ARRAY"
            raise _Fail("JSON_PARSER_ERROR",
                        f"Cannot deserialize instance of {type_} from {token} value {json.dumps(value)} "
                        "or request may be missing a required field")
        if type_ == "boolean":
            if not isinstance(value, bool):
                raise _Fail("JSON_PARSER_ERROR",
                            f"Cannot deserialize instance of boolean from VALUE_STRING value {value} "
                            "or request may be missing a required field")
            return value
        if type_ in ("double", "int", "currency", "percent"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _Fail("JSON_PARSER_ERROR",
                            f"Cannot deserialize instance of {type_} from VALUE_STRING value {value} "
                            "or request may be missing a required field")
            return value
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, str):
            value = json.dumps(value)
        return value if value != "" else None  # Salesforce stores blank text as null

    def _prepare(
        self,
        sobject: str,
        body: Any,
        *,
        version: str,
        allow_save: bool,
        existing: dict | None = None,
        staged: list[dict] | None = None,
    ) -> tuple[dict, dict]:
        """Validate one record write, in Salesforce's order; first failure raises `_Fail`.

        Returns (the whole record after the write, the coerced values written). Nothing is stored here.
        """
        if not isinstance(body, dict):
            raise _Fail("JSON_PARSER_ERROR", f"Cannot deserialize instance of {sobject} from a non-object value")
        schema = self.fields[sobject]
        creating = existing is None
        values: dict[str, Any] = {}
        for key, value in body.items():
            if key == "attributes":
                continue
            name = self._canon(sobject, key)
            if name is None:
                raise _Fail("INVALID_FIELD", f"No such column '{key}' on sobject of type {sobject}")
            values[name] = value
        flag = "createable" if creating else "updateable"
        locked = [name for name in values if not schema[name][flag]]
        if locked:
            raise _Fail(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(locked)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                locked,
            )
        values = {name: self._coerce(schema[name], value) for name, value in values.items()}
        merged = {**(existing or {}), **values}

        missing = [n for n in _REQUIRED[sobject] if not str(merged.get(n) or "").strip()]
        if missing:
            raise _Fail("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        for name, value in values.items():
            spec = schema[name]
            if isinstance(value, str) and spec["type"] in _TEXT_TYPES and spec["length"] \
                    and len(value) > spec["length"]:
                raise _Fail("STRING_TOO_LONG",
                            f"{spec['label']}: data value too large: {value} (max length={spec['length']})", [name])
        for name, value in values.items():
            spec = schema[name]
            if spec["type"] == "email" and value is not None and (
                not _EMAIL.fullmatch(value) or value.casefold() in {e.casefold() for e in self.refused_emails}
            ):
                raise _Fail("INVALID_EMAIL_ADDRESS", f"{spec['label']}: invalid email address: {value}", [name])
        for name, value in values.items():
            spec = schema[name]
            allowed = {p["value"] for p in spec["picklistValues"] if p.get("active", True)}
            if spec["type"] == "picklist" and spec["restrictedPicklist"] and value is not None \
                    and value not in allowed:
                raise _Fail("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            f"bad value for restricted picklist field: {value}", [name])

        if creating:
            self._defaults(sobject, merged)
        if sobject == "Lead":
            for rule in list(self.validation_rules):
                message = rule(copy.deepcopy(merged))
                if message:
                    raise _Fail("FIELD_CUSTOM_VALIDATION_EXCEPTION", message, [])

        merged["Id"] = existing["Id"] if existing else self._new_id(sobject)
        if self.lock_rows > 0:
            self.lock_rows -= 1
            raise _Fail("UNABLE_TO_LOCK_ROW",
                        f"unable to obtain exclusive access to this record or 1 records: {merged['Id']}", [])
        if sobject == "Lead" and self.duplicate_rule and (creating or "Email" in values):
            self._check_duplicates(merged, version, allow_save)
        self._check_unique(sobject, merged, staged or [])
        return merged, values

    def _duplicate_of(self, record: dict, other: dict) -> bool:
        def same(name: str) -> bool:
            a, b = record.get(name), other.get(name)
            return isinstance(a, str) and isinstance(b, str) and bool(a) and a.casefold() == b.casefold()

        if same("Email"):
            return True
        return self.duplicate_match == "standard" and same("FirstName") and same("LastName") and \
            ("Company" not in other or same("Company"))

    def _check_duplicates(self, record: dict, version: str, allow_save: bool) -> None:
        if not record.get("Email") and self.duplicate_match == "email":
            return
        results = []
        rules = (("Lead", "Standard_Lead_Match_Rule_v1_0"), ("Contact", "Standard_Contact_Match_Rule_v1_1"))
        for sobject, rule in rules:
            hits = [
                r for r in self._store(sobject).values()
                if r["Id"] != record["Id"] and not r.get("IsConverted") and self._duplicate_of(record, r)
            ]
            if hits:
                results.append({
                    "entityType": sobject, "matchEngine": "FuzzyMatchEngine", "rule": rule, "size": len(hits),
                    "success": True, "errors": [],
                    "matchRecords": [{
                        "record": {"attributes": {"type": sobject, "url": self._url(version, sobject, r["Id"])},
                                   "Id": r["Id"]},
                        "matchConfidence": 100.0, "fieldDiffs": [], "additionalInformation": [],
                    } for r in hits],
                })
        if not results or (self.duplicate_rule == "alert" and allow_save):
            return
        raise _Fail("DUPLICATES_DETECTED", "Use one of these records?", [], duplicateResult={
            "allowSave": self.duplicate_rule == "alert",
            "duplicateRule": "Standard_Lead_Duplicate_Rule",
            "duplicateRuleEntityType": "Lead",
            "errorMessage": "Use one of these records?",
            "matchResults": results,
        })

    def _check_unique(self, sobject: str, record: dict, staged: list[dict]) -> None:
        for name, spec in self.fields[sobject].items():
            value = record.get(name)
            if not spec.get("unique") or value is None or name == "Id":
                continue
            for other in [*self._store(sobject).values(), *staged]:
                theirs = other.get(name)
                if other["Id"] == record["Id"] or theirs is None:
                    continue
                a, b = str(theirs), str(value)
                if a == b if spec.get("caseSensitive") else a.casefold() == b.casefold():
                    raise _Fail("DUPLICATE_VALUE",
                                f"duplicate value found: {name} duplicates value on record with id: {other['Id']}", [])

    # --- write routes -------------------------------------------------------------------------------

    def _create(self, request: Request) -> Response:
        sobject, version = request.params["sobject"], request.params["version"]
        body = self._body(request)
        try:
            merged, _ = self._prepare(sobject, body, version=version, allow_save=self._allow_save(request))
        except _Fail as fail:
            return Response(400, [fail.single()])
        self._store(sobject)[merged["Id"]] = merged
        return Response(201, {"id": merged["Id"], "success": True, "errors": []})

    def _upsert(self, request: Request) -> Response:
        sobject, version = request.params["sobject"], request.params["version"]
        name, spec, value = self._external(request)
        body = self._body(request)
        if isinstance(body, dict):
            for key in body:
                canonical = self._canon(sobject, key)
                if canonical in ("Id", name):
                    return Response(400, [{
                        "message": f"{canonical}: this field is given in the URL of an upsert by external ID "
                                   "and can't also be in the request body",
                        "errorCode": "INVALID_FIELD", "fields": [canonical],
                    }])
        rows = self._matches(sobject, name, spec, value)
        if len(rows) > 1:
            return Response(300, [self._url(version, sobject, r["Id"]) for r in rows])
        if not rows and request.query.get("updateOnly", "").lower() == "true":
            return Response(404, NOT_FOUND)
        existing = rows[0] if rows else None
        data = {**body, name: value} if existing is None and isinstance(body, dict) else body
        try:
            merged, values = self._prepare(sobject, data, version=version, existing=existing,
                                           allow_save=self._allow_save(request))
        except _Fail as fail:
            return Response(400, [fail.single()])
        self._commit(sobject, merged, values, existing)
        created = existing is None
        return Response(201 if created else 200,
                        {"id": merged["Id"], "success": True, "errors": [], "created": created})

    def _commit(self, sobject: str, merged: dict, values: dict, existing: dict | None) -> None:
        if existing is None:
            self._store(sobject)[merged["Id"]] = merged
        else:
            existing.update(values)

    def _collection_records(self, body: Any, sobject: str | None = None) -> tuple[list[dict], bool]:
        """The records and allOrNone of a collection body; whole-request errors raise `_Reject`."""
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise _Reject(400, [{"message": "Unable to parse the request: 'records' must be a list",
                                 "errorCode": "JSON_PARSER_ERROR"}])
        records, all_or_none = body["records"], body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise _Reject(400, [{"message": f"Cannot deserialize instance of boolean from value {all_or_none}",
                                 "errorCode": "JSON_PARSER_ERROR"}])
        if len(records) > 200:
            raise _Reject(400, [{"message": "Maximum number of records exceeded: 200",
                                 "errorCode": "EXCEEDED_ID_LIMIT"}])
        for rec in records:
            type_ = (rec.get("attributes") or {}).get("type") if isinstance(rec, dict) else None
            if not type_:
                raise _Reject(400, [{"message": "Must send a concrete entity type.", "errorCode": "INVALID_TYPE"}])
            if type_ not in self.fields or (sobject is not None and type_ != sobject):
                raise _Reject(400, [{"message": f"sObject type '{type_}' is not supported.",
                                     "errorCode": "INVALID_TYPE"}])
        return records, all_or_none

    def _finish(self, outcomes: list[Any], all_or_none: bool, upsert: bool) -> Response:
        """Commit and render collection results; an outcome is a _Fail or (sobject, merged, values, existing)."""
        failed = any(isinstance(o, _Fail) for o in outcomes)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, _Fail):
                results.append({"success": False, "errors": [outcome.collection(self.collection_duplicate_details)]})
            elif failed and all_or_none:
                rolled = _Fail("ALL_OR_NONE_OPERATION_ROLLED_BACK", ROLLED_BACK, [])
                results.append({"success": False, "errors": [rolled.collection()]})
            else:
                sobject, merged, values, existing = outcome
                self._commit(sobject, merged, values, existing)
                result = {"id": merged["Id"], "success": True, "errors": []}
                if upsert:
                    result["created"] = existing is None
                results.append(result)
        return Response(200, results)

    def _collection_create(self, request: Request) -> Response:
        version = request.params["version"]
        records, all_or_none = self._collection_records(self._body(request))
        allow_save = self._allow_save(request)
        outcomes: list[Any] = []
        staged: list[dict] = []
        for rec in records:
            sobject = rec["attributes"]["type"]
            try:
                merged, values = self._prepare(sobject, rec, version=version, allow_save=allow_save, staged=staged)
            except _Fail as fail:
                outcomes.append(fail)
                continue
            staged.append(merged)
            outcomes.append((sobject, merged, values, None))
        return self._finish(outcomes, all_or_none, upsert=False)

    def _collection_upsert(self, request: Request) -> Response:
        sobject, version = request.params["sobject"], request.params["version"]
        name = self._canon(sobject, request.params["field"])
        spec = self.fields[sobject].get(name) if name else None
        if spec is None or not spec.get("externalId"):
            return Response(404, [{
                "message": f"Provided external ID field does not exist or is not accessible: {request.params['field']}",
                "errorCode": "NOT_FOUND",
            }])
        records, all_or_none = self._collection_records(self._body(request), sobject)
        allow_save = self._allow_save(request)
        outcomes: list[Any] = []
        staged: list[dict] = []
        seen: set[str] = set()
        for rec in records:
            try:
                value = next((v for k, v in rec.items() if k.lower() == name.lower()), None)
                if value is None or value == "":
                    raise _Fail("MISSING_ARGUMENT", f"{name} not specified", [])
                key = str(value) if spec.get("caseSensitive") else str(value).casefold()
                if key in seen:
                    raise _Fail("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [name])
                seen.add(key)
                rows = self._matches(sobject, name, spec, value)
                if len(rows) > 1:
                    raise _Fail("DUPLICATE_EXTERNAL_ID",
                                f"{name}: more than one record found for external id field: "
                                f"[{', '.join(r['Id'] for r in rows)}]", [])
                existing = rows[0] if rows else None
                merged, values = self._prepare(sobject, rec, version=version, allow_save=allow_save,
                                               existing=existing, staged=staged)
            except _Fail as fail:
                outcomes.append(fail)
                continue
            staged.append(merged)
            outcomes.append((sobject, merged, values, existing))
        return self._finish(outcomes, all_or_none, upsert=True)
