"""Profile -> Lead mapping and truncation (pure functions, real odd inputs)."""

from __future__ import annotations

import pytest

from poller.mapping import LeadDefaults, build_lead, is_flagged, lead_mapping, truncate, utf16_length

DEFAULTS = lead_mapping(LeadDefaults(company="Acme Web", lead_source="Auth0"))


def lead_of(profile):
    decision = build_lead(profile, DEFAULTS)
    assert decision.lead is not None, decision.reason
    return decision.lead


def test_full_profile_maps_every_field():
    lead = lead_of({"email": "ada@example.com", "given_name": "Ada", "family_name": "Lovelace", "name": "Ada Lovelace"})
    assert lead == {"LastName": "Lovelace", "FirstName": "Ada", "Email": "ada@example.com", "Company": "Acme Web", "LeadSource": "Auth0"}


@pytest.mark.parametrize(
    "profile, last_name",
    [
        ({"email": "a@example.com", "family_name": "Family", "name": "Full Name"}, "Family"),
        ({"email": "a@example.com", "name": "Full Name"}, "Full Name"),
        ({"email": "jane.doe@example.com"}, "jane.doe"),
        ({"email": "jane@example.com", "family_name": "", "name": None}, "jane"),
        ({"email": "jane@example.com", "family_name": ["not", "a", "string"], "name": 42}, "jane"),
    ],
)
def test_last_name_fallback_chain(profile, last_name):
    assert lead_of(profile)["LastName"] == last_name


def test_missing_first_name_is_left_out_not_sent_empty():
    assert "FirstName" not in lead_of({"email": "a@example.com"})


@pytest.mark.parametrize("profile, reason", [({}, "no_email"), ({"email": None}, "no_email"), ({"email": ""}, "no_email"), ({"email": ["a@example.com"]}, "no_email"), ({"email": "not-an-email"}, "invalid_email"), ({"email": "a" * 75 + "@example.com"}, "invalid_email")])
def test_unusable_email_is_a_reason_not_a_lead(profile, reason):
    decision = build_lead(profile, DEFAULTS)
    assert decision.lead is None and decision.reason == reason


def test_whitespace_and_newlines_from_an_idp_are_collapsed():
    assert lead_of({"email": "a@example.com", "family_name": "  Van\n der\tBerg  "})["LastName"] == "Van der Berg"


def test_long_values_are_cut_to_salesforce_lengths():
    lead = lead_of({"email": "a@example.com", "family_name": "x" * 200, "given_name": "y" * 100})
    assert len(lead["LastName"]) == 80 and len(lead["FirstName"]) == 40


def test_truncate_never_splits_an_emoji_or_a_character():
    family = "👨‍👩‍👧‍👦"  # one grapheme: 4 emoji joined by ZWJ (11 UTF-16 units)
    assert truncate("ab" + family, 5) == "ab"
    assert truncate("é" * 3, 2) == "éé"  # precomposed
    decomposed = "e\u0301" * 3  # e + combining acute
    assert truncate(decomposed, 3) == "e\u0301"
    assert truncate("🇫🇷🇩🇪", 6) == "🇫🇷"  # flags are pairs; never half a flag
    assert truncate("👍🏽x", 3) == ""  # a thumbs-up with its skin tone is one unit of meaning
    text = "😀" * 50
    cut = truncate(text, 80)
    assert utf16_length(cut) <= 80 and cut == "😀" * 40


def test_right_to_left_text_is_kept_whole():
    name = "شريف"
    assert lead_of({"email": "a@example.com", "family_name": name})["LastName"] == name


def test_flag_detection_tolerates_odd_app_metadata():
    assert is_flagged({"app_metadata": {"recordedAsLead": True}})
    assert not is_flagged({"app_metadata": {"recordedAsLead": "true"}})
    assert not is_flagged({"app_metadata": "recordedAsLead"})
    assert not is_flagged({"app_metadata": None})
    assert not is_flagged({})


# --- configurable mapping ------------------------------------------------------------------------

from poller.mapping import FieldMapping, check_against_describe, org_fields, parse_path, read_path  # noqa: E402

PROFILE = {
    "email": "ada@example.com",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "email_verified": True,
    "user_metadata": {"company": "Analytical Engines", "seats": 12, "newsletter": True, "job": {"title": "Countess"}},
    "app_metadata": {"plan": "enterprise"},
    "identities": [{"provider": "google-oauth2", "connection": "google-oauth2"}, {"provider": "auth0"}],
    "created_at": "2024-03-01T10:00:00.000Z",
}


def describe(*extra):
    """A Lead describe like the org's: the standard fields plus `extra` (name, type, length, **flags)."""
    fields = [
        {"name": "Id", "type": "id", "length": 18, "createable": False, "nillable": False, "defaultedOnCreate": True},
        {"name": "LastName", "type": "string", "length": 80, "createable": True, "nillable": False},
        {"name": "FirstName", "type": "string", "length": 40, "createable": True, "nillable": True},
        {"name": "Email", "type": "email", "length": 80, "createable": True, "nillable": True},
        {"name": "Company", "type": "string", "length": 255, "createable": True, "nillable": False},
        {"name": "LeadSource", "type": "picklist", "length": 40, "createable": True, "nillable": True},
        {"name": "Status", "type": "picklist", "length": 40, "createable": True, "nillable": False, "defaultedOnCreate": True},
        {"name": "Title", "type": "string", "length": 128, "createable": True, "nillable": True},
    ]
    for name, type_, length, *flags in extra:
        fields.append({"name": name, "type": type_, "length": length, "createable": True, "nillable": True, **(flags[0] if flags else {})})
    return {"name": "Lead", "fields": fields}


def mapped(overrides, profile=PROFILE, org=None):
    mapping = lead_mapping(LeadDefaults(company="Acme Web", lead_source="Auth0"), overrides)
    decision = build_lead(profile, mapping, org_fields(org) if org else None)
    assert decision.lead is not None, decision.reason
    return decision.lead


@pytest.mark.parametrize(
    "path, steps, value",
    [
        ("given_name", ("given_name",), "Ada"),
        ("user_metadata.company", ("user_metadata", "company"), "Analytical Engines"),
        ("user_metadata.job.title", ("user_metadata", "job", "title"), "Countess"),
        ("identities[0].provider", ("identities", 0, "provider"), "google-oauth2"),
        ("identities[5].provider", ("identities", 5, "provider"), None),
        ("app_metadata.plan.name", ("app_metadata", "plan", "name"), None),  # a string has no keys
    ],
)
def test_profile_paths(path, steps, value):
    assert parse_path(path) == steps
    assert read_path(PROFILE, steps) == value


@pytest.mark.parametrize("bad", ["", "Web sign-ups", "a..b", ".a", "a.", "[0]", "a[x]", "a[0", "'Unknown'", "a b"])
def test_malformed_paths_are_refused_with_a_reason(bad):
    with pytest.raises(ValueError):
        parse_path(bad)


def test_a_path_a_chain_a_default_and_a_fixed_value():
    lead = mapped(
        {
            "Title": FieldMapping("Title", ("user_metadata.job.title",)),
            "Company": FieldMapping("Company", ("user_metadata.company",)),
            "LeadSource": FieldMapping("LeadSource", (), "Web"),
            "Plan__c": FieldMapping("Plan__c", ("app_metadata.tier", "app_metadata.plan"), "free"),
            "Provider__c": FieldMapping("Provider__c", ("identities[0].provider",)),
            "Domain__c": FieldMapping("Domain__c", ("email_domain",)),
            "FirstName": None,
        }
    )
    assert lead == {
        "LastName": "Lovelace",
        "Email": "ada@example.com",
        "Company": "Analytical Engines",
        "LeadSource": "Web",
        "Title": "Countess",
        "Plan__c": "enterprise",
        "Provider__c": "google-oauth2",
        "Domain__c": "example.com",
    }


def test_company_falls_back_to_the_configured_company_and_a_chain_to_its_default():
    bare = {"email": "bob@example.com"}
    lead = mapped({"Company": FieldMapping("Company", ("user_metadata.company",)), "Plan__c": FieldMapping("Plan__c", ("app_metadata.plan",), "free")}, bare)
    assert (lead["Company"], lead["Plan__c"], lead["LastName"]) == ("Acme Web", "free", "bob")


def test_values_are_used_only_when_their_type_fits_the_field():
    org = describe(("Seats__c", "double", 0), ("Newsletter__c", "boolean", 0), ("Signed_Up__c", "date", 0), ("Note__c", "string", 10))
    lead = mapped(
        {
            "Seats__c": FieldMapping("Seats__c", ("user_metadata.company", "user_metadata.seats")),  # text skipped, number used
            "Newsletter__c": FieldMapping("Newsletter__c", ("user_metadata.company", "user_metadata.newsletter")),
            "Signed_Up__c": FieldMapping("Signed_Up__c", ("created_at",)),
            "Note__c": FieldMapping("Note__c", ("user_metadata.seats", "user_metadata.company")),  # a number is no text
        },
        org=org,
    )
    assert (lead["Seats__c"], lead["Newsletter__c"], lead["Signed_Up__c"]) == (12, True, "2024-03-01")
    assert lead["Note__c"] == "Analytical"  # cut to the org's length, at a character boundary


def test_a_fixed_true_or_number_becomes_text_in_a_text_field():
    lead = mapped({"Title": FieldMapping("Title", (), True), "Plan__c": FieldMapping("Plan__c", (), 3)})
    assert (lead["Title"], lead["Plan__c"]) == ("true", "3")


def test_a_value_a_restricted_picklist_refuses_falls_through_to_the_next_source():
    org = describe(("Tier__c", "picklist", 40, {"restrictedPicklist": True, "picklistValues": [{"value": "gold", "active": True}, {"value": "silver", "active": True}]}))
    lead = mapped({"Tier__c": FieldMapping("Tier__c", ("app_metadata.plan",), "silver")}, org=org)
    assert lead["Tier__c"] == "silver"


def test_the_built_in_mapping_fits_the_standard_lead():
    assert check_against_describe(DEFAULTS, describe()) == []


def test_describe_problems_name_the_key_and_what_to_do():
    org = describe(
        ("Score__c", "double", 0, {"createable": False}),
        ("Owner_Ref__c", "reference", 18),
        ("Region__c", "string", 40, {"nillable": False}),
        ("Auth0_Id__c", "string", 255),
    )
    org["fields"][5].update(restrictedPicklist=True, picklistValues=[{"value": "Web", "active": True}])  # LeadSource
    mapping = lead_mapping(
        LeadDefaults(company="Acme", lead_source="Auth0"),
        {
            "Plan_c": FieldMapping("Plan_c", ("app_metadata.plan",), key="lead.fields.Plan_c"),
            "Score__c": FieldMapping("Score__c", ("user_metadata.score",), key="lead.fields.Score__c"),
            "Owner_Ref__c": FieldMapping("Owner_Ref__c", ("user_metadata.owner",), key="lead.fields.Owner_Ref__c"),
        },
    )
    problems = {p.key: p.why for p in check_against_describe(mapping, org, external_id_field="Auth0_Id__c")}
    assert "has no field Plan_c" in problems["lead.fields.Plan_c"]
    assert "cannot be written on create" in problems["lead.fields.Score__c"]
    assert "is a reference field" in problems["lead.fields.Owner_Ref__c"]
    assert "restricted picklist Lead.LeadSource (values: Web)" in problems["salesforce.lead_source"]
    assert "required in this org but not mapped" in problems["lead.fields.Region__c"]
    assert "is not an External ID field" in problems["salesforce.external_id_field"]
    assert len(problems) == 6


def test_a_required_field_needs_a_default_unless_its_chain_always_has_a_value():
    org = describe(("Region__c", "string", 40, {"nillable": False}))
    without = lead_mapping(LeadDefaults(company="Acme"), {"Region__c": FieldMapping("Region__c", ("user_metadata.region",))})
    always = lead_mapping(LeadDefaults(company="Acme"), {"Region__c": FieldMapping("Region__c", ("user_metadata.region", "email_domain"))})
    assert [p.key for p in check_against_describe(without, org)] == ["lead.fields.Region__c"]
    assert check_against_describe(always, org) == []


def test_only_standard_fields_fit_an_api_without_the_describe_however_they_are_spelt():
    from poller.mapping import fits_without_describe

    defaults = LeadDefaults(company="Acme Web", lead_source="Auth0")
    assert fits_without_describe(DEFAULTS, None)
    assert fits_without_describe(lead_mapping(defaults, {"title": FieldMapping("title", ("user_metadata.job_title",))}), None)
    assert not fits_without_describe(lead_mapping(defaults, {"Plan__c": FieldMapping("Plan__c", (), "gold")}), None)
    assert not fits_without_describe(DEFAULTS, "Auth0_User_Id__c")  # an upsert names a custom field
