"""Profile -> Lead mapping and truncation (pure functions, real odd inputs)."""

from __future__ import annotations

import pytest

from poller.mapping import LeadDefaults, build_lead, is_flagged, truncate, utf16_length

DEFAULTS = LeadDefaults(company="Acme Web", lead_source="Auth0")


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
