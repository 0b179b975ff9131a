"""`lead-poller check` against the sandbox: one line per check, the right exit code, and no writes."""

from __future__ import annotations

import re

import pytest

from poller.errors import ExitCode


def verdicts(stdout: str) -> dict[str, str]:
    """check name -> "ok" | "warn" | "FAIL" | "skip" (the first word of each check line)."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^(ok|warn|FAIL|skip)\s+(\S+(?: \S+)*?)\s{2,}", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def line_of(stdout: str, name: str) -> str:
    return next(line for line in stdout.splitlines() if re.match(rf"^\S+\s+{re.escape(name)}\s", line))


def only_reads(sandbox) -> bool:
    requests = sandbox.auth0.requests + sandbox.salesforce.requests
    return all(r.method == "GET" or r.path in ("/oauth/token", "/services/oauth2/token") for r in requests)


def test_a_good_set_up_passes_every_check_and_writes_nothing(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")

    run = cli("check")

    assert run.code == 0, run.stdout + run.stderr
    assert set(verdicts(run.stdout).values()) == {"ok"}
    assert {"configuration", "auth0 scopes", "auth0 logs", "salesforce token", "lead required fields", "lead mapped fields", "salesforce api usage"} <= set(verdicts(run.stdout))
    assert "All checks passed." in run.stdout
    assert only_reads(sandbox)
    assert not (sandbox.workdir / "state.db").exists() and not (sandbox.workdir / "state.db.lock").exists()
    assert sandbox.salesforce.leads == {} and "recordedAsLead" not in str(sandbox.auth0.users)


def test_with_a_state_it_checks_the_checkpoint_and_changes_nothing(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    sandbox.auth0.clear_log()
    sandbox.salesforce.clear_log()
    tenant.logins("auth0|a")  # something new to read: check must read it and leave it for the cycle
    files = {p.name: p.read_bytes() for p in sandbox.workdir.iterdir() if p.name.startswith("state.db")}

    run = cli("check")

    assert run.code == 0, run.stdout
    assert "is still in Auth0's log stream" in line_of(run.stdout, "auth0 checkpoint")
    assert "1 event(s) waiting" in line_of(run.stdout, "auth0 logs")
    assert only_reads(sandbox)
    assert {p.name: p.read_bytes() for p in sandbox.workdir.iterdir() if p.name.startswith("state.db")} == files


def test_a_missing_scope_is_named_and_exits_77(sandbox, cli):
    sandbox.auth0.scopes = ("read:logs", "read:users")

    run = cli("check")

    assert run.code == ExitCode.CREDENTIALS == 77
    line = line_of(run.stdout, "auth0 scopes")
    assert line.startswith("FAIL") and "update:users_app_metadata" in line and "read:logs," not in line
    assert verdicts(run.stdout)["salesforce token"] == "ok"  # the other checks still run


@pytest.mark.parametrize("variable, failing", [("AUTH0_CLIENT_SECRET", "auth0 token"), ("SALESFORCE_CLIENT_SECRET", "salesforce token")])
def test_a_wrong_secret_fails_its_token_check_with_77_and_is_never_printed(sandbox, cli, variable, failing):
    wrong = "wrong-secret-" + "x" * 20

    run = cli("check", env={variable: wrong})

    assert run.code == 77
    assert verdicts(run.stdout)[failing] == "FAIL"
    assert variable in line_of(run.stdout, failing)  # the line says what to fix
    assert wrong not in run.stdout + run.stderr
    for secret in sandbox.secret_values():
        assert secret not in run.stdout + run.stderr


def test_external_id_field_must_exist_and_be_a_unique_case_sensitive_external_id(sandbox, cli):
    config = sandbox.write_config(salesforce={"external_id_field": "Auth0_User_Id__c"})
    missing = cli("check", config=config)
    assert missing.code == ExitCode.CONFIG and "has no such field" in line_of(missing.stdout, "lead external id")

    sandbox.salesforce.add_field({"name": "Auth0_User_Id__c", "type": "string", "length": 255, "externalId": True, "unique": False})
    not_unique = cli("check", config=config)
    assert not_unique.code == ExitCode.CONFIG and "not Unique" in line_of(not_unique.stdout, "lead external id")

    sandbox.salesforce.fields["Lead"]["Auth0_User_Id__c"]["unique"] = True
    case_blind = cli("check", config=config)
    assert case_blind.code == ExitCode.CONFIG and "case-insensitive" in line_of(case_blind.stdout, "lead external id")

    sandbox.salesforce.fields["Lead"]["Auth0_User_Id__c"]["caseSensitive"] = True
    good = cli("check", config=config)
    assert good.code == 0 and line_of(good.stdout, "lead external id").startswith("ok")


def test_required_fields_the_mapping_does_not_fill_are_reported_and_org_lengths_shown(sandbox, cli):
    sandbox.salesforce.add_field({"name": "Region__c", "type": "string", "length": 20, "nillable": False})
    sandbox.salesforce.fields["Lead"]["FirstName"]["length"] = 20

    run = cli("check")

    # The same mismatch stops `--run-once` with 78: it is fixed in [lead.fields].
    assert run.code == 78
    assert "Region__c" in line_of(run.stdout, "lead required fields") and line_of(run.stdout, "lead required fields").startswith("FAIL")
    assert "add it to [lead.fields] with a default" in line_of(run.stdout, "lead required fields")
    # Values are cut to the org's own lengths, so a shorter field is information, not a warning.
    assert "FirstName (20)" in line_of(run.stdout, "lead mapped fields") and line_of(run.stdout, "lead mapped fields").startswith("ok")


def test_check_uses_the_configured_mapping(sandbox, cli):
    sandbox.salesforce.add_field({"name": "Plan__c", "type": "string", "length": 40})
    config = sandbox.write_config(lead={"fields": {"Plan__c": "app_metadata.plan", "Tier_c": "app_metadata.tier", "LeadSource": {"value": "Partner"}}})
    sandbox.salesforce.fields["Lead"]["LeadSource"]["restrictedPicklist"] = True

    run = cli("check", config=config)

    assert run.code == 78
    mapped = line_of(run.stdout, "lead mapped fields")
    assert mapped.startswith("FAIL") and "lead.fields.Tier_c: the org's Lead object has no field Tier_c" in mapped
    assert 'LeadSource = "Partner": is not an active value of the restricted picklist Lead.LeadSource' in mapped
    assert "Plan__c" not in mapped  # the org has it
    assert only_reads(sandbox)


def test_a_checkpoint_auth0_no_longer_keeps_fails(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    sandbox.auth0.logs.clear()  # retention passed: every event the checkpoint knew is gone
    tenant.logins("auth0|a")

    run = cli("check")

    assert run.code == 1
    assert "no longer keeps the checkpoint's event" in line_of(run.stdout, "auth0 checkpoint")


def test_an_untrusted_certificate_says_so_and_skips_what_depends_on_it(sandbox, cli, tmp_path):
    config = tmp_path / "no-ca.toml"
    config.write_text(sandbox.config_text(http={"ca_bundle": None}))

    run = cli("check", config=config)

    assert run.code == ExitCode.CONFIG  # as a run exits: trust is set-up
    assert "not trusted by the system trust store" in line_of(run.stdout, "auth0 reachable")
    assert verdicts(run.stdout)["auth0 token"] == "skip" and verdicts(run.stdout)["salesforce token"] == "skip"
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []


def test_an_invalid_configuration_lists_every_problem_and_exits_78(sandbox, cli, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(sandbox.config_text(auth0={"start_from": "yesterday"}, salesforce={"domain": "login.salesforce.com"}))

    run = cli("check", config=config)

    assert run.code == 78
    assert "auth0.start_from" in run.stdout and "salesforce.domain" in run.stdout
    assert sandbox.auth0.requests == [] and sandbox.salesforce.requests == []


def test_the_sandbox_serve_command_keeps_a_sandbox_running_for_check_until_sigterm(tmp_path):
    """`python -m poller.sandbox serve` writes config, CA and secrets, and check passes against it."""
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO, run_cli

    directory = tmp_path / "served"
    server = subprocess.Popen(
        [sys.executable, "-m", "poller.sandbox", "serve", "--dir", str(directory)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        for line in server.stdout:  # the last line it prints before serving
            if line.startswith("serving until"):
                break
        secrets = dict(line.split("=", 1) for line in (directory / "secrets.env").read_text().splitlines())
        assert set(secrets) == {"AUTH0_CLIENT_SECRET", "SALESFORCE_CLIENT_SECRET"}
        assert (directory / "secrets.env").stat().st_mode & 0o077 == 0

        with_env = run_cli("check", "--config", directory / "config.toml", env=secrets)
        with_credentials = run_cli("check", "--config", directory / "config.toml", env={"CREDENTIALS_DIRECTORY": str(directory / "credentials")})

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    assert with_env.code == 0, with_env.stdout
    assert with_credentials.code == 0, with_credentials.stdout
    assert "the newest event is" in line_of(with_env.stdout, "auth0 logs")  # seeded with the demo's events


def test_a_vendor_answer_echoing_the_secret_and_an_email_is_redacted_in_checks_report(sandbox, tenant, cli):
    # A gateway that quotes the token request back (form-encoded) and the Run As user's address.
    echo = f"rejected grant_type=client_credentials&client_secret={sandbox.salesforce_secret} for integration@example.com"
    sandbox.salesforce.fail("POST", "/services/oauth2/token", status=400, body={"error": "invalid_request", "error_description": echo}, times=-1)

    run = cli("check")

    assert run.code != 0
    assert "salesforce token" in verdicts(run.stdout) and verdicts(run.stdout)["salesforce token"] == "FAIL"
    assert sandbox.salesforce_secret not in run.stdout + run.stderr
    assert "integration@example.com" not in run.stdout + run.stderr


def test_a_state_path_under_a_file_fails_the_state_check_naming_the_file(sandbox, cli, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = sandbox.write_config(state={"path": str(blocker / "state.db")})

    run = cli("check", config=config)

    assert run.code == ExitCode.STATE
    assert f"{blocker} is a file, not a folder" in line_of(run.stdout, "state database")
    assert verdicts(run.stdout)["state database"] == "FAIL"


def test_checks_report_scrubs_the_configured_secret_however_a_vendor_quotes_it(sandbox, cli):
    # No `client_secret=` around it: only knowing the configured value finds it.
    echo = f"the consumer secret {sandbox.salesforce_secret} does not match"
    sandbox.salesforce.fail("POST", "/services/oauth2/token", status=400, body={"error": "invalid_client", "error_description": echo}, times=-1)
    run = cli("check")
    assert verdicts(run.stdout)["salesforce token"] == "FAIL"
    assert sandbox.salesforce_secret not in run.stdout + run.stderr and "[redacted]" in line_of(run.stdout, "salesforce token")
