"""Auth0 profile -> Salesforce Lead fields. Pure: no I/O, no clock.

Profiles are untrusted input: any field may be missing, null, of another type, very long, or full of
emoji and right-to-left text. Nothing here raises on such a profile; what cannot become a lead comes
back as a reason instead.

What goes into each Lead field is a `LeadMapping`: per field, the sources to try in order (profile paths
such as `given_name`, `user_metadata.company`, `identities[0].provider`, or a computed source such as
`email_local_part`), then a fixed default. The built-in mapping (`lead_mapping` without overrides) is
the end-to-end one:

    LastName   family_name, name, email_local_part, then "Unknown"
    FirstName  given_name
    Email      email (always; it is how existing leads and contacts are found)
    Company    [salesforce] company
    LeadSource [salesforce] lead_source

The org's Lead describe (`org_fields`) gives each field's type, length and whether it can be written;
`check_against_describe` turns a mismatch into configuration problems before any user is worked.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping, Union

from poller.errors import Problem, toml_value

# Lengths of the standard Lead fields (Salesforce Field Reference, "Lead"); the org's describe wins
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

# Salesforce's own email check is stricter than RFC 5322; this is what it reliably accepts. U+FFFD
# stands where a broken character was (half a UTF-16 pair): such an address reaches nobody.
EMAIL = re.compile(r"^[^@\s\ufffd]+@[^@\s\ufffd]+\.[^@\s\ufffd]+$")

# Field types by how a value is written (describe `type`).
TEXT_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox", "encryptedstring"})
NUMBER_TYPES = frozenset({"double", "int", "long", "currency", "percent"})
WRITABLE_TYPES = TEXT_TYPES | NUMBER_TYPES | {"boolean", "date", "datetime"}

# Sources computed from the user's (validated) email rather than read from a profile path.
COMPUTED_SOURCES = frozenset({"email_local_part", "email_domain"})
# Sources that always have a value for a user who can become a lead (they have a valid email).
ALWAYS_SET = COMPUTED_SOURCES | {"email"}

# Lower-cased Lead fields that cannot be remapped: Email is how existing leads and contacts are found.
FIXED_FIELDS = frozenset({"email"})

# The normalized Auth0 user profile's root attributes (identity providers may add others).
KNOWN_PROFILE_ROOTS = frozenset(
    {
        "user_id", "email", "email_verified", "username", "phone_number", "phone_verified", "created_at",
        "updated_at", "identities", "app_metadata", "user_metadata", "picture", "name", "nickname",
        "multifactor", "last_ip", "last_login", "last_password_reset", "logins_count", "blocked",
        "given_name", "family_name", "locale",
    }
)

Scalar = Union[str, bool, int, float]

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


# --- profile paths ------------------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"(?P<name>[A-Za-z0-9_-]+)|\[(?P<index>\d+)\]|(?P<dot>\.)")


def parse_path(text: str) -> tuple[str | int, ...]:
    """`user_metadata.company` -> ("user_metadata", "company"); `identities[0].provider` ->
    ("identities", 0, "provider"). Raises ValueError with the reason for anything else."""
    steps: list[str | int] = []
    position = 0
    expect_name = True
    for match in _PATH_TOKEN.finditer(text):
        if match.start() != position:
            break
        position = match.end()
        if match.group("name") is not None:
            if not expect_name:
                raise ValueError(f"a '.' is missing before {match.group('name')!r}")
            steps.append(match.group("name"))
            expect_name = False
        elif match.group("index") is not None:
            if expect_name:
                raise ValueError("an index [N] must follow a name, e.g. identities[0]")
            steps.append(int(match.group("index")))
        else:
            if expect_name:
                raise ValueError("empty part between dots")
            expect_name = True
    if position != len(text) or not steps or expect_name:
        raise ValueError(
            "not a profile path: use names joined by dots, with [N] for a list item "
            "(e.g. given_name, user_metadata.company, identities[0].provider)"
        )
    return tuple(steps)


def read_path(profile: Any, steps: tuple[str | int, ...]) -> Any:
    """The value at `steps` in `profile`, or None when any step is missing or of another shape."""
    value = profile
    for step in steps:
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and step < len(value) else None
        else:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def source_problem(source: str) -> str | None:
    """Why `source` cannot be a mapping source, or None when it can."""
    if source in COMPUTED_SOURCES:
        return None
    try:
        parse_path(source)
    except ValueError as exc:
        return str(exc)
    return None


# --- the mapping --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadDefaults:
    company: str
    lead_source: str = "Auth0"


@dataclass(frozen=True)
class FieldMapping:
    """One Lead field: the sources tried in order, then `default` (a fixed value) when none has one."""

    field: str
    sources: tuple[str, ...] = ()
    default: Scalar | None = None
    key: str = ""  # where it was configured, for messages ("lead.fields.Title", "salesforce.company")

    @property
    def where(self) -> str:
        return self.key or f"lead.fields.{self.field}"


@dataclass(frozen=True)
class LeadMapping:
    fields: tuple[FieldMapping, ...]

    def get(self, name: str) -> FieldMapping | None:
        lowered = name.lower()
        return next((f for f in self.fields if f.field.lower() == lowered), None)


def lead_mapping(defaults: LeadDefaults, overrides: Mapping[str, FieldMapping | None] | None = None) -> LeadMapping:
    """The built-in mapping with `overrides` applied (a field name -> its mapping, or None to leave a
    built-in field out). Field names match case-insensitively. Company and LeadSource keep their
    `[salesforce]` setting as the default when an override names no default of its own."""
    built_in = [
        FieldMapping("LastName", ("family_name", "name", "email_local_part"), "Unknown"),
        FieldMapping("FirstName", ("given_name",)),
        FieldMapping("Email", ("email",)),
        FieldMapping("Company", (), defaults.company, key="salesforce.company"),
        FieldMapping("LeadSource", (), defaults.lead_source, key="salesforce.lead_source"),
    ]
    fallbacks = {"company": defaults.company, "leadsource": defaults.lead_source}
    result: dict[str, FieldMapping | None] = {f.field.lower(): f for f in built_in}
    for name, override in (overrides or {}).items():
        lowered = name.lower()
        if override is not None and override.default is None and override.sources and lowered in fallbacks:
            override = FieldMapping(override.field, override.sources, fallbacks[lowered], override.key)
        result[lowered] = override
    return LeadMapping(tuple(f for f in result.values() if f is not None))


# --- the org's Lead fields (from the describe) -------------------------------------------------


@dataclass(frozen=True)
class OrgField:
    name: str
    type: str
    length: int
    createable: bool
    required: bool  # must have a value on create: not nillable, not defaulted by Salesforce
    external_id: bool
    restricted_values: frozenset[str] | None  # the active values of a restricted picklist, else None
    unique: bool = False
    case_sensitive: bool = False


def org_fields(describe: Mapping[str, Any]) -> dict[str, OrgField]:
    """Lower-cased field name -> what the org says about it, from `GET sobjects/Lead/describe`."""
    found: dict[str, OrgField] = {}
    raw_fields = describe.get("fields") if isinstance(describe, Mapping) else None
    for raw in raw_fields if isinstance(raw_fields, list) else []:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            continue
        restricted = None
        if raw.get("restrictedPicklist") is True:
            values = raw.get("picklistValues") if isinstance(raw.get("picklistValues"), list) else []
            restricted = frozenset(v["value"] for v in values if isinstance(v, dict) and isinstance(v.get("value"), str) and v.get("active", True))
        length = raw.get("length")
        createable = raw.get("createable") is True
        found[raw["name"].lower()] = OrgField(
            name=raw["name"],
            type=str(raw.get("type") or ""),
            length=length if isinstance(length, int) and not isinstance(length, bool) else 0,
            createable=createable,
            required=createable and raw.get("nillable") is False and raw.get("defaultedOnCreate") is not True,
            external_id=raw.get("externalId") is True,
            restricted_values=restricted,
            unique=raw.get("unique") is True,
            case_sensitive=raw.get("caseSensitive") is True,
        )
    return found


def field_problems(mapping: LeadMapping, fields: Mapping[str, OrgField]) -> list[Problem]:
    """Mapped fields the org lacks, will not let us write, or whose fixed value a restricted
    picklist refuses."""
    problems: list[Problem] = []
    names = [f.name for f in fields.values()]
    for rule in mapping.fields:
        spec = fields.get(rule.field.lower())
        if spec is None:
            close = difflib.get_close_matches(rule.field, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(Problem(rule.where, None, f"the org's Lead object has no field {rule.field}{hint}"))
        elif not spec.createable:
            problems.append(Problem(rule.where, None, f"Lead.{spec.name} cannot be written on create (read-only, formula, or hidden from the Run As user by field-level security)"))
        elif spec.type not in WRITABLE_TYPES:
            problems.append(Problem(rule.where, None, f"Lead.{spec.name} is a {spec.type} field; lead-poller writes text, picklist, email, phone, url, number, checkbox and date fields"))
        elif spec.restricted_values is not None and isinstance(rule.default, str) and rule.default and rule.default not in spec.restricted_values:
            allowed = ", ".join(sorted(spec.restricted_values)) or "none"
            problems.append(Problem(rule.where, toml_value(rule.default), f"is not an active value of the restricted picklist Lead.{spec.name} (values: {allowed})"))
    return problems


def required_problems(mapping: LeadMapping, fields: Mapping[str, OrgField], *, external_id_field: str | None = None) -> list[Problem]:
    """Fields the org requires on create that some lead would leave empty: not mapped at all, or
    mapped without a default from sources a profile may lack."""
    problems: list[Problem] = []
    mapped = {rule.field.lower(): rule for rule in mapping.fields}
    external = (external_id_field or "").lower()
    for key, spec in fields.items():
        if not spec.required or key == external:
            continue
        rule = mapped.get(key)
        if rule is None:
            problems.append(Problem(f"lead.fields.{spec.name}", None, f"Lead.{spec.name} is required in this org but not mapped: add it to [lead.fields] with a default"))
        elif key not in FIXED_FIELDS and rule.default in (None, "") and not set(rule.sources) & ALWAYS_SET:
            problems.append(Problem(rule.where, None, f"Lead.{spec.name} is required: give it a default, so a profile without {', '.join(rule.sources)} still makes a valid lead"))
    return problems


def external_id_problems(fields: Mapping[str, OrgField], external_id_field: str | None) -> list[Problem]:
    if not external_id_field:
        return []
    spec = fields.get(external_id_field.lower())
    if spec is None:
        return [Problem("salesforce.external_id_field", toml_value(external_id_field), "the org's Lead object has no such field")]
    if not spec.external_id:
        return [Problem("salesforce.external_id_field", toml_value(external_id_field), f"Lead.{spec.name} is not an External ID field (tick External ID and Unique on it in Setup)")]
    if not spec.unique:
        return [Problem("salesforce.external_id_field", toml_value(external_id_field), f"Lead.{spec.name} is not Unique: tick Unique, or one user's id could match several leads")]
    if not spec.case_sensitive:
        # Auth0 ids can differ by case alone (samlp|acme|JDoe and samlp|acme|jdoe are two people):
        # a case-insensitive field would write one person's lead over the other's.
        return [Problem("salesforce.external_id_field", toml_value(external_id_field),
                        f"Lead.{spec.name} is Unique but case-insensitive: choose \"Treat 'ABC' and 'abc' as different values "
                        "(case sensitive)\" on the field, since Auth0 user ids can differ by case alone")]
    if not spec.createable:
        return [Problem("salesforce.external_id_field", toml_value(external_id_field), f"Lead.{spec.name} is not createable for the Run As user (field-level security)")]
    return []


def fits_without_describe(mapping: LeadMapping, external_id_field: str | None) -> bool:
    """Whether `mapping` writes only standard Lead fields whose lengths are known here, and upserts
    on no external id: what a Salesforce-compatible API that has no Lead describe can still take."""
    standard = {name.lower() for name in LEAD_FIELD_LENGTHS}  # API names are case-insensitive
    return not external_id_field and all(rule.field.lower() in standard for rule in mapping.fields)


def check_against_describe(mapping: LeadMapping, describe: Mapping[str, Any], *, external_id_field: str | None = None) -> list[Problem]:
    """Every way `mapping` does not fit the org's Lead object (from its describe): fields it lacks or
    will not let us write, required fields left without a value, fixed values a restricted picklist
    refuses, an external id field that is not one. Run before any user is worked, and by `check`."""
    fields = org_fields(describe)
    if not fields:
        return [Problem("salesforce", None, "the Lead describe lists no fields; check the Run As user's access to Lead")]
    return (
        field_problems(mapping, fields)
        + required_problems(mapping, fields, external_id_field=external_id_field)
        + external_id_problems(fields, external_id_field)
    )


# --- profile -> lead ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do with one profile: a lead payload, or the reason there is none."""

    lead: dict[str, Any] | None
    reason: str | None = None  # set when lead is None
    email: str | None = None


def _source_value(profile: Mapping[str, Any], source: str, email: str) -> Any:
    if source == "email_local_part":
        return email.split("@", 1)[0]
    if source == "email_domain":
        return email.rsplit("@", 1)[1]
    return read_path(profile, parse_path(source))


def _fit(value: Any, name: str, spec: OrgField | None, *, fixed: bool = False) -> Scalar | None:
    """`value` as the field takes it (type, length, allowed values), or None when it cannot be used.

    A profile value is used when its type fits the field: text for text and picklist fields, true or
    false for a checkbox, a number (or numeric text) for a number field. A fixed value from the
    configuration is taken as meant: true/false and numbers become text in a text field."""
    kind = spec.type if spec else "string"
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind in NUMBER_TYPES:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        if isinstance(value, (int, float)) and math.isfinite(value):
            return value
        return None
    if fixed and isinstance(value, bool):
        text = "true" if value else "false"
    elif fixed and isinstance(value, (int, float)):
        text = str(value)
    else:
        text = _text(value)
    if text is None:
        return None
    if kind == "date":
        return text[:10]  # an ISO timestamp (created_at) names its day first
    if kind == "datetime":
        return text
    if spec is not None and spec.restricted_values is not None and text not in spec.restricted_values:
        return None  # the org would refuse the whole lead; try the next source instead
    limit = spec.length if spec is not None and spec.length else LEAD_FIELD_LENGTHS.get(name, 255)
    return truncate(text, limit) or None


def build_lead(profile: Mapping[str, Any], mapping: LeadMapping, fields: Mapping[str, OrgField] | None = None) -> Decision:
    """The lead payload for `profile` under `mapping`; `fields` (from `org_fields`) gives types and
    lengths, the standard Lead lengths are used without it."""
    fields = fields or {}
    email = email_of(profile)
    if email is None:
        return Decision(lead=None, reason="no_email")
    email_spec = fields.get("email")
    email_limit = email_spec.length if email_spec is not None and email_spec.length else LEAD_FIELD_LENGTHS["Email"]
    if not EMAIL.match(email) or utf16_length(email) > email_limit:
        # Truncating an address would make it someone else's; Salesforce would refuse it anyway.
        return Decision(lead=None, reason="invalid_email", email=email)
    lead: dict[str, Any] = {}
    for rule in mapping.fields:
        spec = fields.get(rule.field.lower())
        if rule.field.lower() == "email":
            lead[rule.field] = email
            continue
        value = None
        for source in rule.sources:
            value = _fit(_source_value(profile, source, email), rule.field, spec)
            if value is not None:
                break
        if value is None and rule.default is not None:
            value = _fit(rule.default, rule.field, spec, fixed=True)
        if value is not None:
            lead[rule.field] = value
    return Decision(lead=lead, email=email)
