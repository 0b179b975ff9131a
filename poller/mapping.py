"""Auth0 profile -> Salesforce Lead fields. Pure: no I/O, no clock.

Profiles are untrusted input: any field may be missing, null, of another type, very long, or full of
emoji and right-to-left text. Nothing here raises on such a profile; what cannot become a lead comes
back as a reason instead.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

# Lengths of the standard Lead fields (Salesforce Field Reference, "Lead"); an org's describe wins
# where it is known.
LEAD_FIELD_LENGTHS: dict[str, int] = {
    "LastName": 80,
    "FirstName": 40,
    "Email": 80,
    "Company": 255,
    "LeadSource": 40,
    "Title": 128,
    "Phone": 40,
    "City": 40,
    "State": 80,
    "Country": 80,
}

# The Lead fields `build_lead` may fill (`check` compares them with the org's Lead describe).
MAPPED_FIELDS = ("LastName", "FirstName", "Email", "Company", "LeadSource")

# Salesforce's own email check is stricter than RFC 5322; this is what it reliably accepts.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_ZWJ = "\u200d"


def _extends(ch: str) -> bool:
    """True if `ch` belongs to the character before it (combining mark, ZWJ, variation selector,
    emoji skin-tone modifier or tag), so a cut must not fall just before it."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch == _ZWJ
        or 0xFE00 <= code <= 0xFE0F
        or 0x1F3FB <= code <= 0x1F3FF
        or 0xE0020 <= code <= 0xE007F
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def truncate(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` characters without splitting a character or an emoji.

    Length is counted in UTF-16 code units, as Salesforce counts it, so an emoji outside the BMP
    costs two; a cut never lands inside a grapheme (a ZWJ sequence, a flag, a letter with its
    combining accents): the whole grapheme is dropped instead.
    """
    if utf16_length(text) <= limit:
        return text
    kept: list[str] = []
    used = 0
    for ch in text:
        cost = 2 if ord(ch) > 0xFFFF else 1
        if used + cost > limit:
            break
        kept.append(ch)
        used += cost
    cut = len(kept)
    # Back off while the first dropped character would have extended the last kept one.
    while cut > 0 and cut < len(text) and (_extends(text[cut]) or text[cut - 1] == _ZWJ):
        cut -= 1
    # Regional indicators pair into flags: an odd run at the cut leaves half a flag.
    run = 0
    while run < cut and _is_regional_indicator(text[cut - 1 - run]):
        run += 1
    if run % 2 == 1 and cut < len(text) and _is_regional_indicator(text[cut]):
        cut -= 1
    return text[:cut].rstrip()


def _text(value: Any) -> str | None:
    """A usable string from a profile value, or None (missing, null, empty, or not a string)."""
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())  # collapse newlines/tabs an IdP may send
    return value or None


def email_of(profile: Mapping[str, Any]) -> str | None:
    return _text(profile.get("email"))


def is_flagged(profile: Mapping[str, Any]) -> bool:
    """True when an earlier run (or the seed Action) already recorded this user as a lead."""
    app_metadata = profile.get("app_metadata")
    return isinstance(app_metadata, dict) and app_metadata.get("recordedAsLead") is True


def flagged_lead_id(profile: Mapping[str, Any]) -> str | None:
    app_metadata = profile.get("app_metadata")
    if isinstance(app_metadata, dict):
        return _text(app_metadata.get("salesforceLeadId"))
    return None


@dataclass(frozen=True)
class LeadDefaults:
    company: str
    lead_source: str = "Auth0"


@dataclass(frozen=True)
class Decision:
    """What to do with one profile: a lead payload, or the reason there is none."""

    lead: dict[str, str] | None
    reason: str | None = None  # set when lead is None
    email: str | None = None


def build_lead(profile: Mapping[str, Any], defaults: LeadDefaults, lengths: Mapping[str, int] = LEAD_FIELD_LENGTHS) -> Decision:
    email = email_of(profile)
    if email is None:
        return Decision(lead=None, reason="no_email")
    if not EMAIL.match(email) or utf16_length(email) > lengths.get("Email", 80):
        # Truncating an address would make it someone else's; Salesforce would refuse it anyway.
        return Decision(lead=None, reason="invalid_email", email=email)
    local_part = email.split("@", 1)[0]
    last_name = _text(profile.get("family_name")) or _text(profile.get("name")) or local_part or "Unknown"
    fields: dict[str, str | None] = {
        "LastName": last_name,
        "FirstName": _text(profile.get("given_name")),
        "Email": email,
        "Company": _text(defaults.company),
        "LeadSource": _text(defaults.lead_source),
    }
    lead = {name: truncate(value, lengths.get(name, 255)) for name, value in fields.items() if value}
    return Decision(lead=lead, email=email)
