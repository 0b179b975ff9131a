"""Who becomes a lead: filters and consent, as pure functions of a login event or of a profile.

Applications and connections are properties of the login EVENT, so they are judged at ingest: an event
from a denied application is not a login for us (`event_reason`). Everything else is a property of the
person and is judged when the user is worked (`profile_reason`), in this order:

    blocked                                  the user is blocked in Auth0            (re-checked on login)
    email_domain_denied / _not_allowed       the address's domain                    (final)
    connection_denied / _not_allowed         every identity's connection              (re-checked on login)
    email_unverified                         require_verified_email                   (re-checked on login)
    awaiting_consent                         the consent path is not exactly true     (re-checked on login)

Final reasons come before re-checkable ones, so a staff address that has not consented is recorded as
staff (it will never be a lead) rather than as waiting for consent. The connection is judged on the
profile too because an SSO login event may name no connection, and `backfill --users` has no event.
Which reasons are re-checked on a later login is `ledger.RECHECK_ON_LOGIN`.

Names compare case-insensitively; an email domain entry also covers its subdomains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from poller.config import Config
from poller.mapping import LeadDefaults, LeadMapping, email_of, lead_mapping, parse_path, read_path


@dataclass(frozen=True)
class AllowDeny:
    """An allow list (empty: everything is allowed) and a deny list (checked first)."""

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    @classmethod
    def of(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> "AllowDeny":
        return cls(frozenset(a.casefold() for a in allow), frozenset(d.casefold() for d in deny))

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def verdict(self, values: Iterable[str]) -> str | None:
        """'denied' if any value is denied, 'not_allowed' if an allow list names none of them."""
        found = {v.casefold() for v in values if v}
        if found & self.deny:
            return "denied"
        if self.allow and not found & self.allow:
            return "not_allowed"
        return None


def _domain_matches(domain: str, entries: frozenset[str]) -> bool:
    return any(domain == entry or domain.endswith("." + entry) for entry in entries)


@dataclass(frozen=True)
class LeadRules:
    """Everything that decides who becomes a lead and with what fields."""

    mapping: LeadMapping
    applications: AllowDeny = field(default_factory=AllowDeny)
    connections: AllowDeny = field(default_factory=AllowDeny)
    email_domains: AllowDeny = field(default_factory=AllowDeny)
    require_verified_email: bool = False
    consent: str | None = None  # a profile path whose value must be exactly true
    skip_existing_contacts: bool = False

    def event_reason(self, event: Mapping[str, Any]) -> str | None:
        """Why a login event does not count as a login for us, or None when it does."""
        if self.applications:
            names = [v for v in (event.get("client_id"), event.get("client_name")) if isinstance(v, str)]
            verdict = self.applications.verdict(names)
            if verdict:
                return f"application_{verdict}"
        connection = event.get("connection")
        if self.connections and isinstance(connection, str) and connection:
            # An SSO login names no connection; the profile's identities decide then.
            verdict = self.connections.verdict([connection])
            if verdict:
                return f"connection_{verdict}"
        return None

    def profile_reason(self, profile: Mapping[str, Any]) -> str | None:
        """Why this person does not become a lead (now), or None when they do."""
        if profile.get("blocked") is True:
            return "blocked"
        email = email_of(profile)
        domain = email.rsplit("@", 1)[-1].casefold().rstrip(".") if email and "@" in email else None
        if domain is not None and self.email_domains:
            if _domain_matches(domain, self.email_domains.deny):
                return "email_domain_denied"
            if self.email_domains.allow and not _domain_matches(domain, self.email_domains.allow):
                return "email_domain_not_allowed"
        if self.connections:
            identities = profile.get("identities")
            connections = [i.get("connection") for i in identities if isinstance(i, dict)] if isinstance(identities, list) else []
            connections = [c for c in connections if isinstance(c, str) and c]
            if connections:
                if all(self.connections.verdict([c]) == "denied" for c in connections):
                    return "connection_denied"
                if self.connections.allow and self.connections.verdict(connections) == "not_allowed":
                    return "connection_not_allowed"
        if self.require_verified_email and email is not None and profile.get("email_verified") is not True:
            return "email_unverified"
        if self.consent is not None and read_path(profile, parse_path(self.consent)) is not True:
            return "awaiting_consent"
        return None


def lead_rules(config: Config) -> LeadRules:
    """The rules a configuration describes ([lead], with [salesforce] company and lead_source)."""
    lead = config.lead
    return LeadRules(
        mapping=lead_mapping(
            LeadDefaults(company=config.salesforce.company, lead_source=config.salesforce.lead_source),
            dict(lead.fields),
        ),
        applications=AllowDeny.of(lead.allow_applications, lead.deny_applications),
        connections=AllowDeny.of(lead.allow_connections, lead.deny_connections),
        email_domains=AllowDeny.of(lead.allow_email_domains, lead.deny_email_domains),
        require_verified_email=lead.require_verified_email,
        consent=lead.consent,
        skip_existing_contacts=lead.skip_existing_contacts,
    )
