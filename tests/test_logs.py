"""Logs people can trust: one JSON pipeline, no secrets, masked personal data, never a crash."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from poller import logs
from tests.conftest import REPO, run_cli


@pytest.fixture
def captured():
    """The log pipeline writing JSON lines into a buffer; reset to defaults afterwards."""
    stream = io.StringIO()

    def setup(**kwargs):
        logs.configure(stream=stream, json_lines=True, **kwargs)
        return stream

    yield setup
    logs.configure(stream=sys.stdout, pii="mask")


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]  # every line must be one JSON object


@pytest.mark.parametrize("name", ["apscheduler.scheduler", "httpx", "urllib3.connectionpool", "simple_salesforce.api"])
def test_third_party_lines_are_one_json_object_each_with_personal_data_masked(captured, name):
    stream = captured(level="info")
    logging.getLogger(name).warning("retrying for %s from 203.0.113.7 (Bearer abc.def.ghi)", "jane.doe@example.com")
    (line,) = lines(stream)
    assert line["logger"] == name and line["level"] == "warning"
    assert line["event"] == "retrying for j***@e***.com from 203.0.x.x (Bearer [redacted])"


def test_exceptions_are_structured_fields_without_local_variables(captured):
    stream = captured(level="info", secret_values=["a-client-secret-value"])

    def fails(secret="a-client-secret-value", profile={"email": "jane.doe@example.com"}):
        raise ValueError("refused jane.doe@example.com")

    for logger in (logs.get_logger("poller"), logging.getLogger("apscheduler")):
        try:
            fails()
        except ValueError:
            logger.exception("cycle_crashed")
    for line in lines(stream):
        (exception,) = line["exception"]
        assert exception["exc_type"] == "ValueError" and exception["exc_value"] == "refused j***@e***.com"
        assert exception["frames"][-1]["name"] == "fails"
        assert all("locals" not in frame for frame in exception["frames"])
    assert "a-client-secret-value" not in stream.getvalue() and "jane.doe" not in stream.getvalue()


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    __str__ = __repr__


def test_logging_never_raises_on_odd_values(captured, capsys):
    stream = captured(level="debug")
    log = logs.get_logger("poller")
    log.info("odd", thing=Unprintable(), raw=b"\x00\xff\xfe", huge="x" * 200_000, nested={"a": [{"b": Unprintable()}]}, number=float("nan"))
    logging.getLogger("httpx").warning("a %s b", Unprintable())
    logging.getLogger("urllib3").warning(Unprintable())
    logging.getLogger("requests").warning("%d", "not a number")

    odd, *third_party = lines(stream)
    assert odd["thing"] == "<unrepresentable>" and odd["raw"] == "b'\\x00\\xff\\xfe'"
    assert len(odd["huge"]) < 5000 and odd["huge"].endswith("more characters]")
    assert odd["nested"] == {"a": [{"b": "<unrepresentable>"}]}
    assert [line["logger"] for line in third_party] == ["httpx", "urllib3", "requests"]
    assert all("could not be formatted" in line["event"] for line in third_party)
    assert "Logging error" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "mode, email, ip",
    [("mask", "j***@e***.com", "203.0.x.x"), ("hash", logs._hash("jane.doe@example.com"), logs._hash("203.0.113.7")), ("plain", "jane.doe@example.com", "203.0.113.7")],
)
def test_pii_mode_masks_hashes_or_keeps_emails_and_ips_but_never_user_ids(captured, mode, email, ip):
    stream = captured(level="info", pii=mode)
    logs.get_logger("poller").warning("user_failed", user_id="auth0|jane", email="jane.doe@example.com", error="Salesforce: jane.doe@example.com from 203.0.113.7 is invalid")
    (line,) = lines(stream)
    assert line["user_id"] == "auth0|jane"
    assert line["email"] == email
    assert line["error"] == f"Salesforce: {email} from {ip} is invalid"


def test_no_secret_or_token_reaches_any_output_through_the_suites_failure_scenarios(sandbox, tenant, cli, tmp_path):
    """Token refreshes, rejected secrets, validation errors quoting emails: at debug level, every
    output of every run is searched for the sandbox's secrets and every token the emulators issued."""
    tenant.user("auth0|ann", email="ann.example@example.com")
    tenant.user("auth0|bob", email="bob.example@example.com")
    tenant.user("auth0|cat", email="cat.example@example.com")
    sandbox.salesforce.validation_rules.append(lambda lead: f"{lead['Email']} is on the block list" if lead["Email"].startswith("bob") else None)
    tenant.logins("auth0|ann", "auth0|bob")
    invalid_token = {"statusCode": 401, "error": "Unauthorized", "message": "Expired token received for JSON Web Token validation", "errorCode": "invalid_token"}
    sandbox.auth0.fail("GET", r"/api/v2/users/.*", status=401, body=invalid_token, times=1)  # a new token, once
    sandbox.salesforce.fail("GET", r".*/query/?", status=401, body=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], times=1)
    config = sandbox.write_config(extra='\n[logging]\nlevel = "debug"\n')

    runs = [cli("--run-once", config=config)]
    tenant.logins("auth0|cat")
    sandbox.salesforce.fail("POST", r".*/(composite/sobjects|sobjects/Lead)/?", status=503, body="<html>Service Unavailable</html>", times=-1)
    runs.append(cli("--run-once", config=config))
    runs.append(cli("--run-once", config=config, env={"AUTH0_CLIENT_SECRET": "not-the-secret-" + "x" * 10}))
    runs.append(cli("--run-once", config=config, env={"SALESFORCE_CLIENT_SECRET": "not-the-secret-" + "y" * 10}))
    runs.append(cli("check", config=config))
    runs.append(cli("status", "--json", config=config))

    assert [r.code for r in runs[:4]] == [0, 75, 77, 0], [r.stderr for r in runs]  # run 4 has nothing left for Salesforce
    assert runs[0].event("user_failed")["error"].startswith("Salesforce refused the lead: b***@e***.com is on the block list")
    output = "\n".join(r.stdout + r.stderr for r in runs)
    assert len(sandbox.auth0.issued_tokens) >= 4 and len(sandbox.salesforce.issued_tokens) >= 4
    for value in [*sandbox.secret_values(), *sandbox.issued_tokens()]:
        assert value not in output
    for email in ("ann.example@example.com", "bob.example@example.com", "cat.example@example.com"):
        assert email not in output


def test_a_healthy_cycle_is_one_info_line(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    tenant.user("auth0|b")
    tenant.logins("auth0|a", "auth0|b")

    run = cli("--run-once")

    assert run.code == 0
    assert [(e["level"], e["event"]) for e in run.events] == [("info", "cycle_finished")]
    assert run.stdout.count("\n") == 1 and run.stderr == ""


def test_a_stalled_daemon_says_so_in_one_critical_line_and_exits_70(sandbox, tenant, tmp_path):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.auth0.fail("GET", "/api/v2/logs", hang=True)  # the first log read never answers
    config = sandbox.write_config(schedule={"interval_seconds": 1, "watchdog_intervals": 2}, http={"timeout_seconds": 60})

    run = run_cli("--config", config, env=sandbox.env(), timeout=60)

    assert run.code == 70
    (critical,) = [e for e in run.events if e["level"] == "critical"]
    assert critical["event"] == "daemon_stalled" and critical["limit_seconds"] == 2


@pytest.mark.parametrize(
    "text, hidden",
    [
        ("Email: invalid email address: jürgen@bücher.de", "jürgen@bücher.de"),
        ("duplicate of ana@exämple.com", "ana@exämple.com"),
        ("login from 2001:db8::1 failed", "2001:db8::1"),
        ("mapped ::ffff:203.0.113.7", "203.0.113.7"),
    ],
)
def test_unicode_emails_and_ipv6_in_free_text_are_masked(text, hidden):
    from poller.logs import PersonalData

    for mode in ("mask", "hash"):
        assert hidden not in PersonalData(mode).text(text)


def test_times_are_not_mistaken_for_ipv6():
    from poller.logs import PersonalData

    assert PersonalData("mask").text("at 12:34:56 and 2026-12-01T12:34:56Z") == "at 12:34:56 and 2026-12-01T12:34:56Z"


def test_loopback_hosts_in_errors_stay_readable_while_a_persons_ip_is_masked():
    from poller.logs import PersonalData

    text = "TLS to 127.0.0.1:8443 and [::1]:8443 failed; the user signed in from 203.0.113.9 and 2001:db8::7"
    for mode in ("mask", "hash"):
        shown = PersonalData(mode).text(text)
        assert "127.0.0.1:8443" in shown and "::1" in shown
        assert "203.0.113.9" not in shown and "2001:db8::7" not in shown
    assert PersonalData("mask").text("not an address 999.300.1.1") == "not an address ***"


def test_a_stream_whose_reader_is_gone_makes_logging_quiet_not_noisy(capsys):
    """`lead-poller --run-once | head -1`: EPIPE on the log's stream. No exception, no `--- Logging
    error ---` dump; the descriptor now leads to /dev/null, so later writes and the flush at exit work."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", encoding="utf-8")
    try:
        logs.configure(stream=stream, json_lines=True)
        log = logs.get_logger("poller")
        log.info("first", email="jane.doe@example.com")  # EPIPE here
        log.info("second")
        logging.getLogger("httpx").warning("third")
        print("a result line", file=stream, flush=True)  # the descriptor is /dev/null's now
        assert "Logging error" not in capsys.readouterr().err
        assert os.readlink(f"/proc/self/fd/{write_end}") == os.devnull
    finally:
        logs.configure(stream=sys.stdout, pii="mask")
        stream.close()
