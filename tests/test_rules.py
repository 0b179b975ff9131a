"""Who becomes a lead: event and profile rules (pure functions, no HTTP)."""

from __future__ import annotations

import pytest

from poller.ledger import RECHECK_ON_LOGIN
from poller.mapping import LeadDefaults, lead_mapping
from poller.rules import AllowDeny, LeadRules

MAPPING = lead_mapping(LeadDefaults(company="Acme"))


def rules(**kwargs) -> LeadRules:
    return LeadRules(mapping=MAPPING, **kwargs)


def event(client_id="Xq4bT0m3", client_name="Acme Web", connection="Username-Password-Authentication"):
    found = {"type": "s", "user_id": "auth0|a", "client_id": client_id, "client_name": client_name}
    if connection is not None:
        found["connection"] = connection
    return found


def profile(**fields):
    base = {"user_id": "auth0|a", "email": "ada@example.com", "email_verified": True, "identities": [{"connection": "Username-Password-Authentication"}]}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    "applications, expected",
    [
        (AllowDeny.of(deny=["acme web"]), "application_denied"),  # by name, any case
        (AllowDeny.of(deny=["Xq4bT0m3"]), "application_denied"),  # by client_id
        (AllowDeny.of(allow=["Acme iOS"]), "application_not_allowed"),
        (AllowDeny.of(allow=["Acme iOS", "Xq4bT0m3"]), None),
        (AllowDeny(), None),
    ],
)
def test_applications_are_judged_on_the_event(applications, expected):
    assert rules(applications=applications).event_reason(event()) == expected


def test_connections_are_judged_on_the_event_when_it_names_one():
    deny_db = rules(connections=AllowDeny.of(deny=["Username-Password-Authentication"]))
    assert deny_db.event_reason(event()) == "connection_denied"
    assert deny_db.event_reason(event(connection=None)) is None  # an SSO login: the profile decides
    assert rules(connections=AllowDeny.of(allow=["google-oauth2"])).event_reason(event()) == "connection_not_allowed"


def test_connections_are_judged_on_the_profile_identities():
    deny_db = rules(connections=AllowDeny.of(deny=["Username-Password-Authentication"]))
    assert deny_db.profile_reason(profile()) == "connection_denied"
    linked = profile(identities=[{"connection": "Username-Password-Authentication"}, {"connection": "google-oauth2"}])
    assert deny_db.profile_reason(linked) is None  # denied only when every identity is
    allow_google = rules(connections=AllowDeny.of(allow=["google-oauth2"]))
    assert allow_google.profile_reason(profile()) == "connection_not_allowed"
    assert allow_google.profile_reason(linked) is None


@pytest.mark.parametrize(
    "email, email_domains, expected",
    [
        ("ada@example.com", AllowDeny.of(deny=["example.com"]), "email_domain_denied"),
        ("ada@eu.Example.COM", AllowDeny.of(deny=["example.com"]), "email_domain_denied"),  # subdomains, any case
        ("ada@notexample.com", AllowDeny.of(deny=["example.com"]), None),
        ("ada@example.org", AllowDeny.of(allow=["example.com"]), "email_domain_not_allowed"),
        ("ada@example.com", AllowDeny.of(allow=["example.com"]), None),
    ],
)
def test_email_domains(email, email_domains, expected):
    assert rules(email_domains=email_domains).profile_reason(profile(email=email)) == expected


def test_verified_email_is_required_only_when_asked():
    assert rules().profile_reason(profile(email_verified=False)) is None
    strict = rules(require_verified_email=True)
    assert strict.profile_reason(profile(email_verified=False)) == "email_unverified"
    assert strict.profile_reason(profile(email_verified="true")) == "email_unverified"  # exactly true
    assert strict.profile_reason(profile()) is None


@pytest.mark.parametrize("value, expected", [(True, None), (False, "awaiting_consent"), ("true", "awaiting_consent"), (1, "awaiting_consent"), (None, "awaiting_consent")])
def test_consent_must_be_exactly_true(value, expected):
    metadata = {} if value is None else {"marketing_consent": value}
    assert rules(consent="user_metadata.marketing_consent").profile_reason(profile(user_metadata=metadata)) == expected


def test_final_reasons_come_before_ones_a_later_login_rechecks():
    everything = rules(
        email_domains=AllowDeny.of(deny=["staff.example.net"]),
        require_verified_email=True,
        consent="user_metadata.marketing_consent",
    )
    staff = profile(email="ops@staff.example.net", email_verified=False)
    assert everything.profile_reason(staff) == "email_domain_denied"
    assert "email_domain_denied" not in RECHECK_ON_LOGIN
    assert everything.profile_reason(profile(blocked=True, email="ops@staff.example.net")) == "blocked"
    assert everything.profile_reason(profile(email_verified=False)) == "email_unverified"
    for reason in ("blocked", "email_unverified", "awaiting_consent", "application_denied", "connection_not_allowed"):
        assert reason in RECHECK_ON_LOGIN
