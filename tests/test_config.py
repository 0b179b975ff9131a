"""Configuration: parsing, validation (every problem at once), environment overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from poller import config
from poller.errors import ConfigError

VALID = {
    "auth0": {"domain": "example.eu.auth0.com", "client_id": "abc", "client_secret": "s3cr3t-value"},
    "salesforce": {"domain": "acme.my.salesforce.com", "client_id": "key", "client_secret": "sf-s3cr3t", "company": "Acme"},
    "state": {"path": "state.db"},
}


def parse(raw, environ=None):
    return config.parse(raw, environ=environ or {}, base=Path("/etc/lead-poller"))


def problems_of(raw, environ=None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse(raw, environ)
    return {p.key: p.why for p in caught.value.problems}


def with_(section, **values):
    raw = {k: dict(v) for k, v in VALID.items()}
    raw.setdefault(section, {}).update(values)
    return raw


def test_valid_config_gets_documented_defaults():
    cfg = parse(VALID)
    assert cfg.auth0.start_from == "now"
    assert cfg.auth0.login_types == ("s", "scoa", "sens", "sepft")
    assert cfg.salesforce.api_version == "59.0"
    assert cfg.salesforce.lead_source == "Auth0"
    assert cfg.salesforce.on_duplicate == "adopt"
    assert cfg.state.path == Path("/etc/lead-poller/state.db")  # relative to the file's folder
    assert cfg.http.ca_bundle is None
    assert cfg.schedule.interval_seconds == 300


def test_the_example_config_is_valid_once_secrets_come_from_the_environment(tmp_path):
    example = Path(__file__).parents[1] / "config.toml"
    cfg = config.load(example, environ={"AUTH0_CLIENT_SECRET": "x" * 10, "SALESFORCE_CLIENT_SECRET": "y" * 10})
    assert cfg.salesforce.domain == "example.my.salesforce.com"


def test_environment_overrides_the_file():
    cfg = parse(VALID, {"AUTH0_DOMAIN": "other.us.auth0.com", "SALESFORCE_COMPANY": "From Env", "SALESFORCE_CLIENT_SECRET": "env-secret"})
    assert cfg.auth0.domain == "other.us.auth0.com"
    assert cfg.salesforce.company == "From Env"
    assert cfg.salesforce.client_secret == "env-secret"


def test_every_problem_is_reported_at_once_with_key_value_and_why():
    raw = {
        "auth0": {"domain": "https://example.auth0.com", "client_id": "abc", "start_from": "yesterday", "login_types": ["s", "seacft"]},
        "salesforce": {"domain": "login.salesforce.com", "client_id": "k", "company": "Acme", "api_version": "v59.0", "on_duplicate": "merge"},
        "schedule": {"interval_seconds": 0},
        "state": {"path": "s.db"},
        "http": {"timeout_seconds": "30"},
        "bogus": {},
    }
    found = problems_of(raw)
    assert "without a scheme" in found["auth0.domain"]
    assert "is required" in found["auth0.client_secret"] and "AUTH0_CLIENT_SECRET" in found["auth0.client_secret"]
    assert "now" in found["auth0.start_from"]
    assert "'seacft'" in found["auth0.login_types"]
    assert "my.salesforce.com" in found["salesforce.domain"]
    assert "without 'v'" in found["salesforce.api_version"]
    assert "adopt" in found["salesforce.on_duplicate"]
    assert "SALESFORCE_CLIENT_SECRET" in found["salesforce.client_secret"]
    assert "at least 1" in found["schedule.interval_seconds"]
    assert "a number" in found["http.timeout_seconds"]
    assert "unknown section" in found["[bogus]"]
    assert len(found) == 11


@pytest.mark.parametrize(
    "domain, hint",
    [
        ("login.salesforce.com", "My Domain"),
        ("test.salesforce.com", "My Domain"),
        ("acme.lightning.force.com", "acme.my.salesforce.com"),
        ("acme.my.salesforce.com/services", "without a path"),
        ("acme.my.salesforce.com:99999", "port"),
    ],
)
def test_salesforce_domain_must_be_a_my_domain_host(domain, hint):
    assert hint in problems_of(with_("salesforce", domain=domain))["salesforce.domain"]


@pytest.mark.parametrize("domain", ["127.0.0.1:8443", "acme--uat.sandbox.my.salesforce.com", "acme.my.salesforce.com"])
def test_accepted_salesforce_domains(domain):
    assert parse(with_("salesforce", domain=domain)).salesforce.domain == domain


@pytest.mark.parametrize("value", ["now", "oldest", "2026-01-31T00:00:00Z", "2026-01-31T00:00:00+02:00", "90020211104001515271334544008635532534914988032684720226"])
def test_start_from_forms(value):
    assert parse(with_("auth0", start_from=value)).auth0.start_from == value


def test_start_from_timestamp_needs_a_zone():
    assert "time zone" in problems_of(with_("auth0", start_from="2026-01-31T00:00:00"))["auth0.start_from"]


def test_unknown_keys_are_caught_so_typos_do_not_pass_silently():
    assert "unknown key" in problems_of(with_("schedule", interval_secs=60))["schedule.interval_secs"]


def test_secrets_are_never_shown_in_problems():
    raw = with_("auth0", client_secret=12345678)
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    assert "12345678" not in str(caught.value)
    assert "(hidden)" in str(caught.value)


def test_ca_bundle_must_exist(tmp_path):
    missing = tmp_path / "nope.pem"
    assert "no such file" in problems_of(with_("http", ca_bundle=str(missing)))["http.ca_bundle"]
    from poller.sandbox.tls import SandboxCA

    bundle = SandboxCA().write_bundle(tmp_path / "ca.pem")
    assert parse(with_("http", ca_bundle=str(bundle))).http.ca_bundle == bundle


def test_missing_file_and_bad_toml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[auth0\ndomain=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad, environ={})


def test_repr_of_config_hides_secrets():
    cfg = parse(VALID)
    assert "s3cr3t-value" not in repr(cfg) and "sf-s3cr3t" not in repr(cfg)
    assert set(cfg.secrets()) == {"s3cr3t-value", "sf-s3cr3t"}


# --- [lead] -----------------------------------------------------------------------------------------


def lead(**values):
    raw = {k: dict(v) for k, v in VALID.items()}
    raw["lead"] = values
    return raw


def test_lead_defaults_reproduce_the_built_in_behaviour():
    cfg = parse(VALID)
    assert cfg.lead.fields == () and cfg.lead.consent is None
    assert not cfg.lead.require_verified_email and not cfg.lead.skip_existing_contacts
    assert cfg.lead.deny_email_domains == ()


def test_every_field_form_parses():
    cfg = parse(
        lead(
            fields={
                "Title": "user_metadata.job_title",
                "LastName": ["family_name", "name", "email_local_part"],
                "Company": {"from": "user_metadata.company"},
                "Plan__c": {"from": ["app_metadata.plan"], "default": "free"},
                "LeadSource": {"value": "Web"},
                "FirstName": False,
            },
            consent="user_metadata.marketing_consent",
            deny_email_domains=["example.org"],
        )
    )
    fields = dict(cfg.lead.fields)
    assert fields["Title"].sources == ("user_metadata.job_title",)
    assert fields["LastName"].sources == ("family_name", "name", "email_local_part")
    assert (fields["Plan__c"].sources, fields["Plan__c"].default) == (("app_metadata.plan",), "free")
    assert (fields["LeadSource"].sources, fields["LeadSource"].default) == ((), "Web")
    assert fields["FirstName"] is None
    assert cfg.lead.consent == "user_metadata.marketing_consent"


def test_every_lead_problem_is_listed_with_a_way_out():
    found = problems_of(
        lead(
            fields={
                "Email": "user_metadata.work_email",
                "Company": False,
                "LeadSource": "Web sign-ups",
                "Title": {"from": "a..b"},
                "Plan__c": {"value": "x", "from": "y"},
                "Seats__c": 3,
                "Bad-Name": "given_name",
                "Region__c": {"form": "user_metadata.region"},
            },
            deny_email_domains=["@staff.example.net"],
            allow_connections=["google-oauth2"],
            deny_connections=["Google-OAuth2"],
            consent="email_local_part",
            require_verified_email="yes",
            colour="blue",
        )
    )
    assert "always the user's email" in found["lead.fields.Email"]
    assert "cannot be left out" in found["lead.fields.Company"]
    assert "{ value = " in found["lead.fields.LeadSource"]  # a fixed value written as a path
    assert "empty part between dots" in found["lead.fields.Title"]
    assert "cannot be combined" in found["lead.fields.Plan__c"]
    assert "or false to leave the field out" in found["lead.fields.Seats__c"]
    assert "API name" in found["lead.fields.Bad-Name"]
    assert "unknown key form" in found["lead.fields.Region__c"]
    assert "without '@'" in found["lead.deny_email_domains"]
    assert "in both allow_connections and deny_connections" in found["lead.deny_connections"]
    assert "profile path" in found["lead.consent"]
    assert "true or false" in found["lead.require_verified_email"]
    assert "unknown key" in found["lead.colour"]
    assert len(found) == 13


def test_the_external_id_field_cannot_also_be_mapped():
    raw = lead(fields={"Auth0_User_Id__c": "user_id"})
    raw["salesforce"]["external_id_field"] = "Auth0_User_Id__c"
    assert "always holds the Auth0 user id" in problems_of(raw)["lead.fields.Auth0_User_Id__c"]


def test_the_example_config_turns_on_verified_email_and_documents_the_rules(tmp_path):
    example = Path(__file__).parents[1] / "config.toml"
    cfg = config.load(example, environ={"AUTH0_CLIENT_SECRET": "x" * 10, "SALESFORCE_CLIENT_SECRET": "y" * 10})
    assert cfg.lead.require_verified_email is True
    text = example.read_text()
    for key in ("consent", "skip_existing_contacts", "deny_email_domains", "allow_applications", "deny_connections", "[lead.fields]"):
        assert key in text


# --- systemd: credentials, state directory; metrics --------------------------------------------


def without_secrets():
    raw = {k: dict(v) for k, v in VALID.items()}
    raw["auth0"].pop("client_secret")
    raw["salesforce"].pop("client_secret")
    return raw


def test_secrets_come_from_systemd_credential_files_without_their_trailing_newline(tmp_path):
    (tmp_path / "AUTH0_CLIENT_SECRET").write_text("from-credential-file\n")
    (tmp_path / "SALESFORCE_CLIENT_SECRET").write_text("sf-from-credential")
    cfg = parse(without_secrets(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (cfg.auth0.client_secret, cfg.salesforce.client_secret) == ("from-credential-file", "sf-from-credential")


def test_an_environment_variable_wins_over_a_credential_file_which_wins_over_the_file(tmp_path):
    (tmp_path / "AUTH0_CLIENT_SECRET").write_text("credential")
    (tmp_path / "SALESFORCE_CLIENT_SECRET").write_text("credential")
    cfg = parse(VALID, {"CREDENTIALS_DIRECTORY": str(tmp_path), "AUTH0_CLIENT_SECRET": "environment"})
    assert cfg.auth0.client_secret == "environment"
    assert cfg.salesforce.client_secret == "credential"  # over the file's "sf-s3cr3t"


def test_an_unreadable_credential_is_a_problem_naming_the_file(tmp_path):
    (tmp_path / "AUTH0_CLIENT_SECRET").mkdir()  # a directory cannot be read as a file, even by root
    problems = problems_of(without_secrets(), {"CREDENTIALS_DIRECTORY": str(tmp_path), "SALESFORCE_CLIENT_SECRET": "x" * 10})
    assert "cannot be read" in problems["credential AUTH0_CLIENT_SECRET"]


def test_a_missing_secret_names_both_ways_to_give_it():
    problems = problems_of(without_secrets(), {"AUTH0_CLIENT_SECRET": "x" * 10})
    assert "SALESFORCE_CLIENT_SECRET" in problems["salesforce.client_secret"]
    assert "credential" in problems["salesforce.client_secret"]


def test_commands_that_call_no_vendor_can_load_without_secrets():
    cfg = config.parse(without_secrets(), environ={}, base=Path("/etc/lead-poller"), require_secrets=False)
    assert cfg.auth0.client_secret == ""
    state_only = config.parse({"state": {"path": "state.db"}}, environ={}, base=Path("/etc/lead-poller"), require_secrets=False)
    assert state_only.state.path == Path("/etc/lead-poller/state.db")
    with pytest.raises(ConfigError):  # what is there is still checked
        config.parse({"state": {"path": "state.db"}, "salesforce": {"domain": "login.salesforce.com"}}, environ={}, require_secrets=False)


def test_without_a_state_path_systemds_state_directory_holds_the_database():
    raw = {k: dict(v) for k, v in VALID.items() if k != "state"}
    assert parse(raw, {"STATE_DIRECTORY": "/var/lib/lead-poller/acme"}).state.path == Path("/var/lib/lead-poller/acme/state.db")
    assert "state.path" in problems_of(raw)
    assert parse(VALID, {"STATE_DIRECTORY": "/var/lib/x"}).state.path == Path("/etc/lead-poller/state.db")  # the file wins


def test_metrics_are_off_by_default_and_listen_takes_host_and_port():
    assert parse(VALID).metrics.listen is None
    assert parse(with_("metrics", listen="127.0.0.1:9464")).metrics.listen == ("127.0.0.1", 9464)
    assert parse(with_("metrics", listen="[::1]:9464")).metrics.listen == ("::1", 9464)
    for bad in ("9464", "127.0.0.1", "http://127.0.0.1:9464", "127.0.0.1:99999"):
        assert "host:port" in problems_of(with_("metrics", listen=bad))["metrics.listen"], bad
    assert "metrics.port" in problems_of(with_("metrics", port=9464))


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("http", "timeout_seconds", float("inf")),
        ("http", "timeout_seconds", 1e300),
        ("http", "timeout_seconds", float("nan")),
        ("schedule", "interval_seconds", float("inf")),
        ("schedule", "interval_seconds", 10 * 86400),
        ("work", "max_attempts", 10**9),
        ("work", "backoff_cap_seconds", 1e12),
    ],
)
def test_numbers_must_be_finite_and_sane(section, key, value):
    assert "at most" in problems_of(with_(section, **{key: value}))[f"{section}.{key}"]


def test_blank_company_is_refused_before_every_lead_fails():
    assert "blank" in problems_of(with_("salesforce", company="   "))["salesforce.company"]


def test_start_from_log_id_must_be_ascii_digits():
    assert "now" in problems_of(with_("auth0", start_from="١٢٣"))["auth0.start_from"]


def test_ca_bundle_that_is_not_pem_is_a_config_problem(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("this is not a certificate")
    assert "not a PEM bundle" in problems_of(with_("http", ca_bundle=str(bundle)))["http.ca_bundle"]


def test_a_byte_order_mark_does_not_break_the_file(tmp_path):
    path = tmp_path / "config.toml"
    text = "\n".join(f"[{name}]\n" + "\n".join(f'{k} = "{v}"' for k, v in values.items()) for name, values in VALID.items())
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert config.load(path, environ={}).auth0.domain == "example.eu.auth0.com"


def test_default_deadline_leaves_room_before_the_next_cycle():
    assert parse(VALID).schedule.deadline_seconds == 240


def test_batched_profile_reads_are_on_by_default_and_a_true_or_false():
    assert parse(VALID).work.batch_profile_reads is True
    assert parse(with_("work", batch_profile_reads=False)).work.batch_profile_reads is False
    assert problems_of(with_("work", batch_profile_reads="no")) == {"work.batch_profile_reads": "must be true or false"}


def test_a_domain_given_as_a_url_is_answered_with_an_example_of_its_own_api():
    found = problems_of(with_("salesforce", domain="https://acme.my.salesforce.com/"))
    assert "without a scheme" in found["salesforce.domain"] and "'acme.my.salesforce.com'" in found["salesforce.domain"]
    found = problems_of(with_("auth0", domain="https://example.eu.auth0.com"))
    assert "'example.eu.auth0.com'" in found["auth0.domain"]


@pytest.mark.parametrize("version, ok", [("51.0", False), ("42.0", False), ("52.0", True), ("62.0", True)])
def test_api_versions_older_than_the_features_used_are_refused(version, ok):
    if ok:
        assert parse(with_("salesforce", api_version=version)).salesforce.api_version == version
    else:
        assert "52.0 or later" in problems_of(with_("salesforce", api_version=version))["salesforce.api_version"]


def test_a_watchdog_shorter_than_a_cycle_may_run_is_refused():
    # The daemon's own watchdog (2 × 60 s) would stop a healthy cycle that runs to its 600 s deadline.
    found = problems_of(with_("schedule", interval_seconds=60, cycle_deadline_seconds=600, watchdog_intervals=2))
    assert set(found) == {"schedule.watchdog_intervals"}
    assert "120 s" in found["schedule.watchdog_intervals"] and "at least 11" in found["schedule.watchdog_intervals"]
    assert parse(with_("schedule", interval_seconds=60, cycle_deadline_seconds=600, watchdog_intervals=11)).schedule.watchdog_intervals == 11
    assert parse(with_("schedule", interval_seconds=60, watchdog_intervals=2)).schedule.deadline_seconds == 48  # the default deadline fits


def test_values_are_shown_as_written_in_toml_and_number_kinds_read_plainly():
    raw = with_("schedule", interval_seconds="60")
    raw["work"] = {"max_attempts": True}
    raw["auth0"]["login_types"] = ["s", 5]
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    shown = {p.key: str(p) for p in caught.value.problems}
    assert shown["schedule.interval_seconds"] == 'schedule.interval_seconds = "60": must be a number'
    assert shown["work.max_attempts"].startswith("work.max_attempts = true: must be a whole number")
    assert shown["auth0.login_types"].startswith('auth0.login_types = ["s", 5]:')


def test_a_bad_value_from_the_environment_names_the_variable_not_the_file():
    with pytest.raises(ConfigError) as caught:
        parse(VALID, {"SALESFORCE_DOMAIN": "login.salesforce.com"})
    (problem,) = caught.value.problems
    assert problem.key == "salesforce.domain" and "environment variable SALESFORCE_DOMAIN" in problem.why
    with pytest.raises(ConfigError) as caught:
        parse(with_("salesforce", domain="login.salesforce.com"))
    assert "environment" not in caught.value.problems[0].why  # from the file: nothing to add
