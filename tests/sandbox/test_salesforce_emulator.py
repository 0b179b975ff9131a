"""The Salesforce emulator, driven by the real simple-salesforce over real TLS."""

from __future__ import annotations

import base64
import re
import threading

import pytest
import requests
from simple_salesforce import Salesforce, format_external_id, format_soql
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from poller.sandbox.salesforce import SalesforceEmulator
from poller.sandbox.tls import SandboxCA

CLIENT_ID = "3MVG9sandbox.client.id"
CLIENT_SECRET = "sandbox-secret-0123456789"
AUTH0_ID = {"name": "Auth0_User_Id__c", "label": "Auth0 User Id", "type": "string", "length": 255,
            "externalId": True, "unique": True}


@pytest.fixture(scope="module")
def ca() -> SandboxCA:
    return SandboxCA()


@pytest.fixture(scope="module")
def bundle(ca, tmp_path_factory) -> str:
    return str(ca.write_bundle(tmp_path_factory.mktemp("ca") / "sandbox-ca.pem"))


@pytest.fixture(scope="module")
def stoppers():
    # Emulator.stop() waits out serve_forever's 0.5 s poll; stop in the background, join once per module.
    threads: list[threading.Thread] = []
    yield threads
    for t in threads:
        t.join()


@pytest.fixture
def make_emu(ca, stoppers):
    started: list[SalesforceEmulator] = []

    def make(**kwargs) -> SalesforceEmulator:
        kwargs.setdefault("custom_fields", [AUTH0_ID])
        emu = SalesforceEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **kwargs)
        emu.serve(ca.server_context())
        # Headers and body go out in two writes; with Nagle on, each keep-alive response waits ~40 ms for a
        # delayed ACK. (Workaround until server.py's handler sets disable_nagle_algorithm itself.)
        emu._server.RequestHandlerClass.disable_nagle_algorithm = True
        started.append(emu)
        return emu

    yield make
    for emu in started:
        stopper = threading.Thread(target=emu.stop)
        stopper.start()
        stoppers.append(stopper)


@pytest.fixture
def emu(make_emu) -> SalesforceEmulator:
    return make_emu()


def get_token(emu, bundle, **form) -> requests.Response:
    data = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return requests.post(f"https://{emu.host}/services/oauth2/token", data=data, verify=bundle, timeout=5)


def connect(emu, bundle, version="59.0") -> Salesforce:
    tok = get_token(emu, bundle).json()
    session = requests.Session()
    session.verify = bundle
    # Without this, a REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in the environment silently replaces session.verify.
    session.trust_env = False
    return Salesforce(instance_url=tok["instance_url"], session_id=tok["access_token"], session=session,
                      version=version)


@pytest.fixture
def sf(emu, bundle) -> Salesforce:
    return connect(emu, bundle)


def lead(**fields) -> dict:
    return {"LastName": "Lovelace", "Company": "Analytical Engines", **fields}


def error_of(exc_info) -> dict:
    content = exc_info.value.content
    assert isinstance(content, list) and len(content) == 1
    return content[0]


# --- OAuth ------------------------------------------------------------------------------------------


def test_token_from_form_body_and_from_basic_auth(emu, bundle):
    by_form = get_token(emu, bundle)
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    by_basic = requests.post(f"https://{emu.host}/services/oauth2/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": f"Basic {basic}"}, verify=bundle, timeout=5)
    for resp in (by_form, by_basic):
        assert resp.status_code == 200
        tok = resp.json()
        assert set(tok) == {"access_token", "signature", "scope", "instance_url", "id", "token_type", "issued_at"}
        assert "expires_in" not in tok and "refresh_token" not in tok
        assert tok["access_token"].startswith("00D000000000001!AR")
        assert tok["instance_url"] == f"https://{emu.host}"
        assert tok["id"] == f"https://{emu.host}/id/00D000000000001EAA/005000000000001AAA"
        assert tok["token_type"] == "Bearer" and tok["scope"] == "api"
        assert re.fullmatch(r"\d{13}", tok["issued_at"])
        base64.b64decode(tok["signature"], validate=True)
        assert "Sforce-Limit-Info" not in resp.headers
    assert by_form.json()["access_token"] != by_basic.json()["access_token"]
    assert emu.tokens_issued == 2 and emu.api_usage == 0  # token calls are not API calls


@pytest.mark.parametrize(
    "form, error, description",
    [
        ({"client_id": "nope"}, "invalid_client_id", "client identifier invalid"),
        ({"client_secret": "wrong"}, "invalid_client", "invalid client credentials"),
        ({"grant_type": "password"}, "unsupported_grant_type", "grant type not supported"),
    ],
)
def test_token_errors(emu, bundle, form, error, description):
    resp = get_token(emu, bundle, **form)
    assert resp.status_code == 400
    assert resp.json() == {"error": error, "error_description": description}
    assert emu.tokens_issued == 0


class _MyDomainToSandbox(requests.Session):
    """simple-salesforce hard-codes https://{domain}.salesforce.com for logins; point that at the emulator."""

    def __init__(self, host: str, bundle: str) -> None:
        super().__init__()
        self.host, self.verify, self.trust_env = host, bundle, False

    def request(self, method, url, *args, **kwargs):
        url = re.sub(r"^https://[^/]+\.salesforce\.com", f"https://{self.host}", url)
        return super().request(method, url, *args, **kwargs)


def test_simple_salesforce_client_credentials_login_and_refresh(emu, bundle):
    sf = Salesforce(consumer_key=CLIENT_ID, consumer_secret=CLIENT_SECRET, domain="acme.my",
                    session=_MyDomainToSandbox(emu.host, bundle))
    assert sf.sf_instance == emu.host and emu.tokens_issued == 1
    assert emu.calls("POST", "/services/oauth2/token")[0].headers["authorization"].startswith("Basic ")
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0
    emu.expire_sessions()
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 0  # 401, re-login, re-send
    assert emu.tokens_issued == 2
    assert [c.status for c in emu.calls("GET", r".*/query/")] == [200, 401, 200]


# --- session, limits, routing ------------------------------------------------------------------------


def test_missing_or_bogus_token_is_401_with_limit_header(emu, bundle, sf):
    resp = requests.get(f"https://{emu.host}/services/data/v59.0/query/", params={"q": "SELECT Id FROM Lead"},
                        verify=bundle, timeout=5)
    assert resp.status_code == 401
    assert resp.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert resp.headers["Sforce-Limit-Info"] == "api-usage=0/15000"
    sf.session_id = "00D000000000001!ARforged"
    sf.headers["Authorization"] = "Bearer 00D000000000001!ARforged"
    with pytest.raises(SalesforceExpiredSession) as exc:
        sf.Lead.create(lead())
    assert error_of(exc)["errorCode"] == "INVALID_SESSION_ID"
    assert emu.api_usage == 0 and not emu.leads


def test_expire_sessions_invalidates_every_token(emu, bundle):
    first, second = connect(emu, bundle), connect(emu, bundle)
    first.query("SELECT Id FROM Lead")
    emu.expire_sessions()
    for sf in (first, second):
        with pytest.raises(SalesforceExpiredSession):
            sf.query("SELECT Id FROM Lead")
    assert connect(emu, bundle).query("SELECT Id FROM Lead")["done"] is True


def test_session_timeout_follows_the_clock_and_activity(make_emu, bundle):
    now = [1_700_000_000.0]
    emu = make_emu(clock=lambda: now[0], session_timeout=7200)
    sf = connect(emu, bundle)
    now[0] += 7000
    sf.query("SELECT Id FROM Lead")  # activity extends the session
    now[0] += 7000
    sf.query("SELECT Id FROM Lead")
    now[0] += 7201
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Lead")


def test_api_usage_header_and_daily_limit(make_emu, bundle):
    emu = make_emu(api_limit=3)
    sf = connect(emu, bundle)
    sf.query("SELECT Id FROM Lead")
    assert sf.api_usage["api-usage"].used == 1 and sf.api_usage["api-usage"].total == 3
    assert sf.limits() == {"DailyApiRequests": {"Max": 3, "Remaining": 1}}
    sf.restful("composite/sobjects", method="POST", json={"records": [
        {"attributes": {"type": "Lead"}, **lead()} for _ in range(5)]})  # a collection is one call
    assert sf.api_usage["api-usage"].used == 3 and emu.api_usage == 3 and len(emu.leads) == 5
    with pytest.raises(SalesforceRefusedRequest) as exc:
        sf.Lead.create(lead())
    assert error_of(exc) == {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    assert emu.requests[-1].status == 403 and emu.api_usage == 3 and len(emu.leads) == 5
    resp = sf.session.get(f"{sf.base_url}limits/", headers=sf.headers)
    assert resp.status_code == 403 and resp.headers["Sforce-Limit-Info"] == "api-usage=3/3"
    emu.api_limit = 4  # the rolling window frees capacity
    assert sf.query("SELECT Id FROM Lead")["totalSize"] == 5
    assert sf.api_usage["api-usage"].used == 4


@pytest.mark.parametrize("version", ["v59.0", "", "59"])
def test_bad_api_version_is_salesforce_404_and_unexpected(emu, bundle, version):
    sf = connect(emu, bundle, version=version)  # "v59.0" builds /services/data/vv59.0/
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.query("SELECT Id FROM Lead")
    assert error_of(exc) == {"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}
    assert len(emu.unexpected) == 1 and emu.api_usage == 0


def test_unknown_route_is_recorded_as_unexpected(emu, bundle, sf):
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.create({"Name": "x"})
    resp = requests.get(f"https://{emu.host}/nowhere", verify=bundle, timeout=5)
    assert resp.status_code == 404
    assert [r.path for r in emu.unexpected] == ["/services/data/v59.0/sobjects/Account/", "/nowhere"]


def test_collections_need_their_api_version(emu, bundle):
    sf = connect(emu, bundle, version="41.0")
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("composite/sobjects", method="POST", json={"records": []})


# --- query --------------------------------------------------------------------------------------------


def test_query_with_escapes_selected_fields_and_attributes(emu, sf):
    tricky = "o'brien\\\"x\"@example.com"
    emu.add_leads([lead(Email="plain@example.com")])
    created = sf.Lead.create(lead(Email="ada@example.com", LastName="O'Brien \\ \"Tab\"\t", Auth0_User_Id__c="auth0|1"))
    result = sf.query(format_soql(
        "SELECT Id, Email, OwnerId, Status, Auth0_User_Id__c FROM Lead WHERE LastName = {} AND IsConverted = false "
        "LIMIT 1", "o'brien \\ \"tab\"\t"))
    assert result["totalSize"] == 1 and result["done"] is True
    assert result["records"] == [{
        "attributes": {"type": "Lead", "url": f"/services/data/v59.0/sobjects/Lead/{created['id']}"},
        "Id": created["id"], "Email": "ada@example.com", "OwnerId": "005000000000001AAA",
        "Status": "Open - Not Contacted", "Auth0_User_Id__c": "auth0|1",
    }]
    assert sf.query(format_soql("SELECT Id FROM Lead WHERE Email = {}", tricky))["totalSize"] == 0
    assert sf.query("select id from lead where email = null")["totalSize"] == 0


def test_query_is_case_insensitive_and_supports_in_or_parentheses(emu, sf):
    ids = emu.add_leads([lead(Email="Ada@Example.com"), lead(Email="bob@example.com"),
                         lead(Email="carol@example.com", IsConverted=True), lead()])
    emu.add_contacts([{"LastName": "Dee", "Email": "DEE@example.com"}])
    q = format_soql("SELECT Id, Email FROM Lead WHERE Email IN {} AND IsConverted = false",
                    ["ada@example.COM", "BOB@example.com", "carol@example.com"])
    assert [r["Id"] for r in sf.query(q)["records"]] == ids[:2]
    q = "SELECT Id FROM Lead WHERE (Email = 'CAROL@example.com' OR Email = null) AND IsConverted = true"
    assert [r["Id"] for r in sf.query(q)["records"]] == [ids[2]]
    assert sf.query("SELECT Id FROM Lead WHERE Email = null")["records"][0]["Id"] == ids[3]
    contacts = sf.query(format_soql("SELECT Id, Email FROM Contact WHERE Email = {} LIMIT 1", "dee@EXAMPLE.com"))
    assert contacts["records"][0]["Id"].startswith("003") and contacts["records"][0]["Email"] == "DEE@example.com"


def test_query_unknown_field(sf):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(format_soql("SELECT Id FROM Lead WHERE Foo = {}", "x"))
    err = error_of(exc)
    assert err["errorCode"] == "INVALID_FIELD"
    assert err["message"] == (
        "\nSELECT Id FROM Lead WHERE Foo = 'x'\n" + " " * 26 + "^\nERROR at Row:1:Column:27\n"
        "No such column 'Foo' on entity 'Lead'. If you are attempting to use a custom field, be sure to append the "
        "'__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
    )


@pytest.mark.parametrize("soql", [
    "SELECT Id FROM Lead WHERE",
    "SELECT Id FROM Lead WHERE Email = 'a' AND Email = 'b' OR Email = 'c'",  # SOQL wants parentheses here
    "SELECT Id FROM Lead WHERE Email = 'unterminated",
    "SELECT FROM Lead",
    "SELECT Id FROM Lead LIMIT x",
])
def test_query_malformed(sf, soql):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query(soql)
    assert error_of(exc)["errorCode"] == "MALFORMED_QUERY"


def test_query_unknown_object(sf):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Leed")
    assert error_of(exc)["errorCode"] == "INVALID_TYPE"


def test_query_url_longer_than_16384_bytes_is_414(emu, sf):
    def query_for(pad: int) -> str:
        return format_soql("SELECT Id FROM Lead WHERE Email IN {}", ["a" * pad, "b@example.com"])

    def url_length(q: str) -> int:
        return len(requests.Request("GET", f"{sf.base_url}query/", params={"q": q}).prepare().path_url)

    pad = 16_384 - url_length(query_for(0))
    assert url_length(query_for(pad)) == 16_384
    assert sf.query(query_for(pad))["totalSize"] == 0
    with pytest.raises(SalesforceGeneralError) as exc:
        sf.query(query_for(pad + 1))
    assert exc.value.status == 414 and isinstance(exc.value.content, str)


# --- single create --------------------------------------------------------------------------------


def test_create_lead(emu, sf):
    result = sf.Lead.create(lead(Email="ada@example.com", LeadSource="Some Unlisted Source"))
    assert result == {"id": result["id"], "success": True, "errors": []}
    assert re.fullmatch(r"00Q[0-9A-Za-z]{15}", result["id"])
    stored = emu.leads[result["id"]]
    assert stored["IsConverted"] is False and stored["Status"] == "Open - Not Contacted"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000\+0000", stored["CreatedDate"])
    fetched = sf.Lead.get(result["id"])
    assert fetched["Email"] == "ada@example.com" and fetched["Title"] is None
    assert emu.calls("POST", r"/services/data/v59\.0/sobjects/Lead/")[0].status == 201
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.get("00Q000000000000ZZZ")


LONG = "é" * 81  # 81 characters, 162 bytes: the limit counts characters


@pytest.mark.parametrize(
    "body, code, message, fields",
    [
        (lead(Foo__c="x"), "INVALID_FIELD", "No such column 'Foo__c' on sobject of type Lead", None),
        (lead(IsConverted=True), "INVALID_FIELD_FOR_INSERT_UPDATE",
         "Unable to create/update fields: IsConverted. Please check the security settings of this field and verify "
         "that it is read/write for your profile or permission set.", ["IsConverted"]),
        (lead(Id="00Q000000000000001"), "INVALID_FIELD_FOR_INSERT_UPDATE", None, ["Id"]),
        ({"Email": "a@example.com"}, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName, Company]",
         ["LastName", "Company"]),
        (lead(Company="  "), "REQUIRED_FIELD_MISSING", "Required fields are missing: [Company]", ["Company"]),
        (lead(LastName=LONG), "STRING_TOO_LONG", f"Last Name: data value too large: {LONG} (max length=80)",
         ["LastName"]),
        (lead(Email="not an@email"), "INVALID_EMAIL_ADDRESS", "Email: invalid email address: not an@email", ["Email"]),
        (lead(Email="a@b@example.com"), "INVALID_EMAIL_ADDRESS", None, ["Email"]),
        (lead(IsConverted="maybe"), "INVALID_FIELD_FOR_INSERT_UPDATE", None, ["IsConverted"]),
        # first failure wins: missing Company beats the too-long name and the bad e-mail
        ({"LastName": LONG, "Email": "bad"}, "REQUIRED_FIELD_MISSING", None, ["Company"]),
        (lead(LastName=LONG, Email="bad"), "STRING_TOO_LONG", None, ["LastName"]),
    ],
)
def test_create_validation_errors(emu, sf, body, code, message, fields):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(body)
    err = error_of(exc)
    assert exc.value.status == 400 and err["errorCode"] == code
    if message is not None:
        assert err["message"] == message
    if fields is None:
        assert "fields" not in err
    else:
        assert err["fields"] == fields
    assert not emu.leads


def test_lengths_count_characters(emu, sf):
    assert sf.Lead.create(lead(LastName="é" * 80, FirstName="🙂" * 40))["success"]


def test_restricted_picklist(make_emu, bundle):
    emu = make_emu(custom_fields=[AUTH0_ID, {"name": "Tier__c", "type": "picklist", "length": 40,
                                             "restrictedPicklist": True, "picklistValues": ["Gold", "Silver"]}])
    sf = connect(emu, bundle)
    assert sf.Lead.create(lead(Tier__c="Gold"))["success"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Tier__c="Bronze"))
    assert error_of(exc) == {"message": "bad value for restricted picklist field: Bronze",
                             "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": ["Tier__c"]}
    emu.fields["Lead"]["LeadSource"]["restrictedPicklist"] = True  # an org that locked LeadSource down
    with pytest.raises(SalesforceMalformedRequest):
        sf.Lead.create(lead(LeadSource="Carrier pigeon"))
    assert sf.Lead.create(lead(LeadSource="Auth0"))["success"]


def test_validation_rules(emu, sf):
    seen = []
    emu.validation_rules.append(lambda rec: seen.append(rec) or None)
    emu.validation_rules.append(lambda rec: "Company may not be ACME" if rec["Company"] == "ACME" else None)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Company="ACME"))
    assert error_of(exc) == {"message": "Company may not be ACME", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                             "fields": []}
    assert seen[0]["Status"] == "Open - Not Contacted"  # rules see the record with its defaults
    assert sf.Lead.create(lead())["success"]


def test_refused_emails_get_the_invalid_email_answer(emu, sf):
    emu.refused_emails = {"Odd.Address@example.com"}
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Email="odd.address@example.com"))
    assert error_of(exc) == {"message": "Email: invalid email address: odd.address@example.com",
                             "errorCode": "INVALID_EMAIL_ADDRESS", "fields": ["Email"]}
    assert sf.Lead.create(lead(Email="plain@example.com"))["success"]


def test_lock_rows_fail_the_next_writes(emu, sf):
    emu.lock_rows = 2
    for _ in range(2):
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Lead.create(lead())
        err = error_of(exc)
        assert err["errorCode"] == "UNABLE_TO_LOCK_ROW" and err["fields"] == []
        assert re.fullmatch(r"unable to obtain exclusive access to this record or 1 records: 00Q\w{15}", err["message"])
    assert emu.lock_rows == 0 and sf.Lead.create(lead())["success"]


@pytest.mark.parametrize("rule", ["alert", "block"])
def test_duplicate_rule_matches_leads_and_contacts(make_emu, bundle, rule):
    emu = make_emu(duplicate_rule=rule)
    sf = connect(emu, bundle)
    [lead_id] = emu.add_leads([lead(Email="ada@example.com")])
    [contact_id] = emu.add_contacts([{"LastName": "Byron", "Email": "byron@example.com"}])
    emu.add_leads([lead(Email="conv@example.com", IsConverted=True)])

    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Email="ADA@example.com"))
    err = error_of(exc)
    assert err == {
        "message": "Use one of these records?", "errorCode": "DUPLICATES_DETECTED", "fields": [],
        "duplicateResult": {
            "allowSave": rule == "alert", "duplicateRule": "Standard_Lead_Duplicate_Rule",
            "duplicateRuleEntityType": "Lead", "errorMessage": "Use one of these records?",
            "matchResults": [{
                "entityType": "Lead", "matchEngine": "FuzzyMatchEngine", "rule": "Standard_Lead_Match_Rule_v1_0",
                "size": 1, "success": True, "errors": [],
                "matchRecords": [{
                    "record": {"attributes": {"type": "Lead", "url": f"/services/data/v59.0/sobjects/Lead/{lead_id}"},
                               "Id": lead_id},
                    "matchConfidence": 100.0, "fieldDiffs": [], "additionalInformation": []}],
            }],
        },
    }
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Email="byron@example.com"))
    match = error_of(exc)["duplicateResult"]["matchResults"][0]
    assert match["entityType"] == "Contact" and match["matchRecords"][0]["record"]["Id"] == contact_id
    assert sf.Lead.create(lead(Email="conv@example.com"))["success"]  # converted leads don't match

    allow = {"Sforce-Duplicate-Rule-Header": "allowSave=true; includeRecordDetails=false"}
    if rule == "alert":
        assert sf.Lead.create(lead(Email="ada@example.com"), headers=allow)["success"]
    else:
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.Lead.create(lead(Email="ada@example.com"), headers=allow)
        assert error_of(exc)["duplicateResult"]["allowSave"] is False


def test_unique_field_rejects_a_second_create(emu, sf):
    first = sf.Lead.create(lead(Auth0_User_Id__c="auth0|abc"))
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Auth0_User_Id__c="AUTH0|ABC"))
    assert error_of(exc)["errorCode"] == "DUPLICATE_VALUE" and first["id"] in error_of(exc)["message"]


def test_concurrent_creates_get_distinct_ids(emu, bundle):
    sf = connect(emu, bundle)
    ids: list[str] = []

    def work():
        for _ in range(10):
            ids.append(sf.Lead.create(lead())["id"])

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 60 == len(emu.leads) == emu.api_usage


# --- upsert by external id -------------------------------------------------------------------------


def test_upsert_creates_then_updates(emu, sf):
    ext = format_external_id("Auth0_User_Id__c", "google-oauth2|123/x")
    resp = sf.Lead.upsert(ext, lead(Email="ada@example.com"), raw_response=True)
    assert resp.status_code == 201
    body = resp.json()
    assert body == {"id": body["id"], "success": True, "errors": [], "created": True}
    assert emu.leads[body["id"]]["Auth0_User_Id__c"] == "google-oauth2|123/x"
    assert sf.Lead.upsert(ext, {"Title": "Countess"}) == 200
    resp = sf.Lead.upsert(ext.upper().replace("AUTH0_USER_ID__C", "Auth0_User_Id__c"), {"City": "London"},
                          raw_response=True)
    assert resp.status_code == 200 and resp.json()["created"] is False  # external ids match case-insensitively
    assert len(emu.leads) == 1
    stored = emu.leads[body["id"]]
    assert stored["Title"] == "Countess" and stored["City"] == "London" and stored["Email"] == "ada@example.com"
    assert sf.Lead.get_by_custom_id("Auth0_User_Id__c", "google-oauth2|123/x")["Id"] == body["id"]


def test_upsert_validates_both_paths(emu, sf):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.upsert(format_external_id("Auth0_User_Id__c", "auth0|1"), {"LastName": "x"})
    assert error_of(exc)["errorCode"] == "REQUIRED_FIELD_MISSING" and error_of(exc)["fields"] == ["Company"]
    sf.Lead.upsert(format_external_id("Auth0_User_Id__c", "auth0|1"), lead())
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.upsert(format_external_id("Auth0_User_Id__c", "auth0|1"), {"LastName": ""})
    assert error_of(exc)["errorCode"] == "REQUIRED_FIELD_MISSING"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.upsert(format_external_id("Auth0_User_Id__c", "auth0|1"), {"Email": "nope"})
    assert error_of(exc)["errorCode"] == "INVALID_EMAIL_ADDRESS"


@pytest.mark.parametrize("field", ["Auth0_User_Id__c", "Id"])
def test_upsert_rejects_id_or_external_field_in_body(sf, field):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.upsert(format_external_id("Auth0_User_Id__c", "auth0|1"), lead(**{field: "auth0|1"}))
    assert error_of(exc)["errorCode"] == "INVALID_FIELD" and error_of(exc)["fields"] == [field]


@pytest.mark.parametrize("field", ["Nope__c", "Email"])
def test_upsert_needs_an_external_id_field(emu, sf, field):
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Lead.upsert(f"{field}/x", lead())
    assert error_of(exc) == {
        "message": f"Provided external ID field does not exist or is not accessible: {field}",
        "errorCode": "NOT_FOUND"}
    assert not emu.leads and not emu.unexpected


def test_upsert_matching_several_records_is_300(emu, sf):
    emu.add_field({"name": "Legacy_Key__c", "type": "string", "length": 40, "externalId": True})  # not unique
    ids = emu.add_leads([lead(Legacy_Key__c="k1"), lead(Legacy_Key__c="K1")])
    with pytest.raises(SalesforceMoreThanOneRecord) as exc:
        sf.Lead.upsert("Legacy_Key__c/k1", {"Title": "x"})
    assert exc.value.content == [f"/services/data/v59.0/sobjects/Lead/{i}" for i in ids]


def test_upsert_update_only(emu, sf):
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.upsert("Auth0_User_Id__c/auth0%7C9?updateOnly=true", lead())
    assert not emu.leads


# --- sObject Collections -----------------------------------------------------------------------------


def collection(*records, all_or_none=False) -> dict:
    return {"allOrNone": all_or_none, "records": [{"attributes": {"type": "Lead"}, **r} for r in records]}


def test_collection_mixed_results(make_emu, bundle):
    emu = make_emu(duplicate_rule="alert")
    sf = connect(emu, bundle)
    [existing] = emu.add_leads([lead(Email="dup@example.com")])
    results = sf.restful("composite/sobjects", method="POST", json=collection(
        lead(Email="ok@example.com"), lead(Email="not-an-email"), lead(Email="DUP@example.com"),
        lead(Title="t" * 129)))
    assert len(results) == 4
    assert results[0] == {"id": results[0]["id"], "success": True, "errors": []}
    assert results[1] == {"success": False, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS",
                                                        "message": "Email: invalid email address: not-an-email",
                                                        "fields": ["Email"]}]}
    dup = results[2]["errors"][0]
    assert results[2]["success"] is False and "errorCode" not in dup
    assert dup["statusCode"] == "DUPLICATES_DETECTED" and dup["fields"] == []
    assert dup["duplicateResult"]["matchResults"][0]["matchRecords"][0]["record"]["Id"] == existing
    assert results[3]["errors"] == [{"statusCode": "STRING_TOO_LONG", "fields": ["Title"],
                                     "message": f"Title: data value too large: {'t' * 129} (max length=128)"}]
    assert set(emu.leads) == {existing, results[0]["id"]}
    assert emu.api_usage == 1

    allowed = sf.restful("composite/sobjects", method="POST", json=collection(lead(Email="dup@example.com")),
                         headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"})
    assert allowed[0]["success"] is True


def test_collection_all_or_none_rolls_back(emu, sf):
    results = sf.restful("composite/sobjects", method="POST", json=collection(
        lead(), {"LastName": "NoCompany"}, lead(), all_or_none=True))
    rolled = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "fields": [],
              "message": "Record rolled back because not all records were valid and the request was using "
                         "AllOrNone header"}
    assert results == [
        {"success": False, "errors": [rolled]},
        {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING", "fields": ["Company"],
                                       "message": "Required fields are missing: [Company]"}]},
        {"success": False, "errors": [rolled]},
    ]
    assert not emu.leads
    ok = sf.restful("composite/sobjects", method="POST", json=collection(lead(), lead(), all_or_none=True))
    assert [r["success"] for r in ok] == [True, True] and len(emu.leads) == 2


def test_collection_limits_and_shape_errors(emu, sf):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="POST", json=collection(*[lead()] * 201))
    assert error_of(exc) == {"message": "Maximum number of records exceeded: 200", "errorCode": "EXCEEDED_ID_LIMIT"}
    assert len(sf.restful("composite/sobjects", method="POST", json=collection(*[lead()] * 200))) == 200
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="POST", json={"records": [lead()]})
    assert error_of(exc)["errorCode"] == "INVALID_TYPE"


def test_collection_unique_values_within_one_batch(emu, sf):
    results = sf.restful("composite/sobjects", method="POST", json=collection(
        lead(Auth0_User_Id__c="auth0|1"), lead(Auth0_User_Id__c="auth0|1")))
    assert results[0]["success"] and results[1]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"


def test_collection_upsert(emu, sf):
    [existing] = emu.add_leads([lead(Auth0_User_Id__c="auth0|old", Title="Old")])
    results = sf.restful("composite/sobjects/Lead/Auth0_User_Id__c", method="PATCH", json=collection(
        {"Auth0_User_Id__c": "auth0|old", "Title": "New"}, lead(Auth0_User_Id__c="auth0|new"),
        lead(Email="x@example.com"), lead(Auth0_User_Id__c="auth0|bad", Email="bad")))
    assert results[0] == {"id": existing, "success": True, "errors": [], "created": False}
    assert results[1]["created"] is True and results[1]["success"] is True
    assert results[2]["success"] is False and results[2]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    assert results[3]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert emu.leads[existing]["Title"] == "New" and len(emu.leads) == 2

    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.restful("composite/sobjects/Lead/Email", method="PATCH", json=collection(lead()))
    assert error_of(exc)["errorCode"] == "NOT_FOUND"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects/Lead/Auth0_User_Id__c", method="PATCH",
                   json=collection(*[lead(Auth0_User_Id__c=f"auth0|{i}") for i in range(201)]))
    assert error_of(exc)["errorCode"] == "EXCEEDED_ID_LIMIT"

    rolled = sf.restful("composite/sobjects/Lead/Auth0_User_Id__c", method="PATCH", json=collection(
        {"Auth0_User_Id__c": "auth0|old", "Title": "Newer"}, lead(Auth0_User_Id__c="auth0|x", Company=""),
        all_or_none=True))
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert emu.leads[existing]["Title"] == "New"


# --- describe and limits ----------------------------------------------------------------------------


def test_describe_lead_and_contact(emu, sf):
    desc = sf.Lead.describe()
    assert desc["name"] == "Lead"
    fields = {f["name"]: f for f in desc["fields"]}
    expected = {"Id": ("id", 18), "LastName": ("string", 80), "FirstName": ("string", 40), "Email": ("email", 80),
                "Company": ("string", 255), "LeadSource": ("picklist", 40), "Status": ("picklist", 40),
                "Title": ("string", 128), "Phone": ("phone", 40), "City": ("string", 40), "State": ("string", 80),
                "Country": ("string", 80), "Description": ("textarea", 32000), "IsConverted": ("boolean", 0),
                "CreatedDate": ("datetime", 0), "Auth0_User_Id__c": ("string", 255)}
    for name, (type_, length) in expected.items():
        assert (fields[name]["type"], fields[name]["length"]) == (type_, length), name
        assert set(fields[name]) >= {"name", "label", "type", "length", "createable", "updateable", "nillable",
                                     "defaultedOnCreate", "externalId", "unique", "restrictedPicklist",
                                     "picklistValues"}
    assert not fields["Id"]["createable"] and not fields["IsConverted"]["createable"]
    assert not fields["CreatedDate"]["createable"] and fields["Status"]["defaultedOnCreate"]
    assert fields["LeadSource"]["restrictedPicklist"] is False
    assert "Auth0" in [p["value"] for p in fields["LeadSource"]["picklistValues"]]
    assert fields["Auth0_User_Id__c"]["externalId"] and fields["Auth0_User_Id__c"]["unique"]
    assert fields["LastName"]["label"] == "Last Name"

    emu.add_field({"name": "Signup_Source__c", "label": "Signup Source", "type": "string", "length": 20})
    assert "Signup_Source__c" in [f["name"] for f in sf.Lead.describe()["fields"]]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Signup_Source__c="x" * 21))
    assert error_of(exc)["message"].startswith("Signup Source: data value too large")
    assert sf.Contact.describe()["name"] == "Contact"


def test_limits_resource(emu, sf):
    emu.api_limit = 100
    assert sf.limits() == {"DailyApiRequests": {"Max": 100, "Remaining": 99}}


def test_malformed_json_and_type_mismatch(make_emu, bundle):
    emu = make_emu(custom_fields=[AUTH0_ID, {"name": "Opted_In__c", "type": "boolean"}])
    sf = connect(emu, bundle)
    resp = sf.session.post(f"{sf.base_url}sobjects/Lead/", data="{not json", headers=sf.headers)
    assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Lead.create(lead(Opted_In__c="yes"))
    assert error_of(exc)["errorCode"] == "JSON_PARSER_ERROR"
    created = sf.Lead.create(lead(Opted_In__c=True, Email=""))
    assert emu.leads[created["id"]]["Opted_In__c"] is True
    assert emu.leads[created["id"]]["Email"] is None  # blank text is stored as null
