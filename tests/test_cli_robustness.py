"""The command line where a user trial found it rough: state commands without a state, argument
errors, errors reported once, a closed pipe, operator commands beside a systemd service, packaging."""

from __future__ import annotations

import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from poller import cli as cli_module
from poller.errors import ExitCode
from poller.ledger import Ledger
from tests.conftest import REPO, cli_env, run_cli, start_cli


def without_secrets(config: Path, *args: str, env: dict[str, str] | None = None):
    return run_cli("--config", config, *args, env=env)


def on_a_terminal(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as a person at a shell sees it."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "poller", *map(str, args)],
        stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=cli_env(env), cwd=REPO,
    )
    os.close(slave)
    output = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            output += chunk
        process.wait(timeout=timeout)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.returncode, output.decode("utf-8", "replace").replace("\r\n", "\n")


# --- 1. retry and reset-checkpoint without a state database ------------------------------------


@pytest.mark.parametrize("folder_exists", [False, True], ids=["no-folder", "empty-folder"])
@pytest.mark.parametrize(
    "args",
    [("retry", "--all-failed"), ("retry", "auth0|someone"), ("reset-checkpoint",), ("reset-checkpoint", "--to", "900123"), ("status",)],
    ids=lambda a: " ".join(a),
)
def test_state_commands_without_a_state_database_say_so_exit_like_status_and_create_nothing(sandbox, tmp_path, args, folder_exists):
    folder = tmp_path / "state"
    if folder_exists:
        folder.mkdir()
    state = folder / "state.db"
    config = sandbox.write_config(tmp_path / "typo.toml", state_path=state)

    run = without_secrets(config, *args)

    assert run.code == ExitCode.ERROR == 1, run.stdout + run.stderr  # what `status` has always exited here
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"lead-poller {args[0]}: no state database at {state}")
    assert "check [state] path in" in line and str(config) in line
    assert run.stdout == ""
    assert (sorted(os.listdir(folder)) if folder_exists else folder.exists()) == ([] if folder_exists else False)


def test_an_empty_state_file_is_no_state_either_and_is_left_as_it_is(sandbox, tmp_path):
    (tmp_path / "state").mkdir()
    state = tmp_path / "state" / "state.db"
    state.touch()
    config = sandbox.write_config(tmp_path / "c.toml", state_path=state)
    for args in (("retry", "--all-failed"), ("reset-checkpoint",)):
        run = without_secrets(config, *args)
        assert run.code == 1 and "no state database" in run.stderr
    assert os.listdir(state.parent) == ["state.db"] and state.stat().st_size == 0


# --- 2. command-line usage errors exit 78 -----------------------------------------------------


@pytest.mark.parametrize(
    "args, usage, complaint",
    [
        (("--bogus",), "usage: lead-poller [-h]", "lead-poller: error: unrecognized arguments: --bogus"),
        (("status", "--json", "--prometheus"), "usage: lead-poller status", "lead-poller status: error: argument --prometheus: not allowed with argument --json"),
        (("frobnicate",), "usage: lead-poller [-h]", "lead-poller: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (("backfill", "--max-leads"), "usage: lead-poller backfill", "lead-poller backfill: error: argument --max-leads: expected one argument"),
        (("retry", "--everyone"), "usage: lead-poller [-h]", "lead-poller: error: unrecognized arguments: --everyone"),
    ],
)
def test_argument_errors_exit_78_with_argparse_usage_on_stderr(tmp_path, args, usage, complaint):
    run = run_cli(*args, cwd=tmp_path)
    assert run.code == ExitCode.CONFIG == 78, run.stderr
    assert run.stdout == ""
    assert run.stderr.startswith(usage) and run.stderr.rstrip().splitlines()[-1].startswith(complaint), run.stderr


def test_argument_errors_are_78_in_process_too_and_help_is_still_0(capsys):
    assert cli_module.main(["--bogus"]) == 78
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert cli_module.main(["--help"]) == 0
    assert cli_module.main(["status", "--help"]) == 0
    assert "--prometheus" in capsys.readouterr().out


@pytest.mark.parametrize("args", [("--help",), ("retry", "--help")])
def test_help_exits_0(tmp_path, args):
    run = run_cli(*args, cwd=tmp_path)
    assert run.code == 0 and run.stdout.startswith("usage: lead-poller") and run.stderr == ""


def readme_section(title: str) -> str:
    """A README section, from its heading to the next heading of its level or above (code blocks,
    whose `# comments` are no headings, included)."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    level = len(title.split(" ", 1)[0])
    start = lines.index(title)
    fenced = False
    for end in range(start + 1, len(lines)):
        if lines[end].startswith("```"):
            fenced = not fenced
        heading = re.match(r"(#+) ", lines[end])
        if heading and not fenced and len(heading.group(1)) <= level:
            break
    else:
        end = len(lines)
    return "\n".join(lines[start:end])


def test_the_readme_exit_code_table_says_argument_errors_exit_78_and_never_2():
    section = readme_section("## Exit codes")
    codes = dict(re.findall(r"^\| (\d+) \| (.*) \|$", section, re.MULTILINE))
    assert "2" not in codes
    assert "unknown option" in codes["78"] and "RestartPreventExitStatus=78" in section


# --- 3. one clear line per fatal error, logging configured alike for every command -----------------


def test_a_fatal_error_on_a_terminal_is_said_once(sandbox, tenant):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    config = sandbox.write_config()
    code, output = on_a_terminal("--config", config, "--run-once", env={**sandbox.env(), "AUTH0_CLIENT_SECRET": "not-the-secret-value"})
    assert code == ExitCode.CREDENTIALS
    assert output.count("Auth0 rejected the client id/secret") == 1, output
    assert "\nlead-poller: Auth0 token: Auth0 rejected" in "\n" + output


def test_a_fatal_error_of_the_daemon_on_a_terminal_is_said_once(sandbox, tenant):
    config = sandbox.write_config()
    code, output = on_a_terminal("--config", config, env={**sandbox.env(), "SALESFORCE_CLIENT_SECRET": "not-the-secret-value"})
    assert code == ExitCode.CREDENTIALS
    assert output.count("wrong consumer secret") == 1, output


def test_a_fatal_error_in_the_journal_is_one_line_for_a_person_and_one_structured_line(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    run = cli("--run-once", env={"AUTH0_CLIENT_SECRET": "not-the-secret-value"})
    assert run.code == ExitCode.CREDENTIALS
    (line,) = run.stderr.splitlines()
    assert line.startswith("lead-poller: ") and "AUTH0_CLIENT_SECRET" in line
    (fatal,) = [e for e in run.events if e["event"] == "fatal"]
    assert fatal["level"] == "error" and fatal["code"] == "auth0_credentials_rejected" and fatal["exit_code"] == 77
    assert fatal["error"] == line.removeprefix("lead-poller: ")


def test_an_invalid_configuration_is_listed_for_a_person_and_one_structured_line_in_the_log(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "c.toml")
    run = run_cli("--config", config, "--run-once")  # no secrets in the environment
    assert run.code == ExitCode.CONFIG
    assert run.stderr.splitlines()[0] == f"lead-poller: invalid {config}: 2 problems"
    assert "AUTH0_CLIENT_SECRET" in run.stderr and "SALESFORCE_CLIENT_SECRET" in run.stderr
    (fatal,) = [json.loads(line) for line in run.stdout.splitlines()]  # stdout is the log: JSON only
    assert fatal["event"] == "fatal" and fatal["code"] == "config_invalid" and fatal["exit_code"] == 78
    assert fatal["error"] == f"invalid {config}: 2 problems" and len(fatal["problems"]) == 2


def test_reset_checkpoint_beside_a_running_poller_is_one_line_on_stderr_and_nothing_on_stdout(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    with Ledger(sandbox.workdir / "state.db", clock=lambda: 0.0):  # the daemon holds the state
        run = without_secrets(sandbox.workdir / "config.toml", "reset-checkpoint")
    assert run.code == ExitCode.LOCKED
    assert run.stdout == ""  # no log line as console text on stdout
    (line,) = run.stderr.splitlines()
    assert line.startswith("lead-poller reset-checkpoint: another lead-poller is already using the state database")


def test_status_on_a_corrupt_state_is_one_line(sandbox, tmp_path):
    state = tmp_path / "state.db"
    state.write_bytes(b"garbage" * 1000)
    config = sandbox.write_config(tmp_path / "c.toml", state_path=state)
    run = without_secrets(config, "status")
    assert run.code == ExitCode.STATE
    assert run.stdout == "" and len(run.stderr.splitlines()) == 1, run.stderr
    # Every command words the same fault the same way.
    retry = without_secrets(config, "retry", "--all-failed")
    assert retry.code == ExitCode.STATE
    assert run.stderr.split(": ", 1)[1] == retry.stderr.split(": ", 1)[1]
    assert "is not a lead-poller database or is corrupt" in run.stderr


def test_retry_logs_json_lines_on_stderr_when_not_on_a_terminal(sandbox, tenant, cli):
    """A bug's traceback goes to the log, which is JSON lines off a terminal for these commands too
    (on stderr: their stdout is their result). The state here has a trigger nobody foresaw."""
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    with sqlite3.connect(sandbox.workdir / "state.db") as db:
        db.execute("UPDATE users SET status = 'failed'")
        db.execute("CREATE TRIGGER boom BEFORE UPDATE ON users BEGIN SELECT RAISE(ABORT, 'a trigger nobody foresaw'); END")
    for args in (("retry", "--all-failed"),):
        run = without_secrets(sandbox.workdir / "config.toml", *args)
        assert run.code == ExitCode.ERROR and run.stdout == "", run.stdout + run.stderr
        log_line, person = run.stderr.splitlines()
        logged = json.loads(log_line)
        assert logged["event"] == "unexpected_error" and logged["level"] == "error"
        assert logged["exception"][0]["exc_type"] == "IntegrityError"
        assert person.startswith(f"lead-poller {args[0]}: unexpected error:") and "this is a bug" in person


# --- 4. stdout closed early -----------------------------------------------------------------------


def test_a_run_once_whose_reader_goes_away_finishes_its_cycle_quietly(sandbox, tenant, cli):
    """`lead-poller --run-once | head -1`: the pipe closes after the first line; the cycle goes on."""
    users = [f"auth0|p{n}" for n in range(8)]
    for user in users:
        tenant.user(user)
        tenant.logins(user)
    sandbox.auth0.latency = 0.05  # the cycle still has lines to log when the reader is gone
    config = sandbox.write_config()

    process = start_cli("--config", config, "--run-once", env=sandbox.env())
    first = process.stdout.readline()
    process.stdout.close()  # what `head -1` does
    stderr = process.stderr.read()
    code = process.wait(timeout=60)

    assert json.loads(first)["event"]
    assert code == 0
    assert stderr == "", stderr  # no "--- Logging error ---", no BrokenPipeError, no event dicts
    assert len(sandbox.salesforce.leads) == len(users)
    sandbox.auth0.latency = 0.0
    again = cli("--run-once")
    assert again.code == 0 and again.event("cycle_finished")["leads_created"] == 0
    assert json.loads(without_secrets(config, "status", "--json").stdout)["users"]["recorded"] == len(users)


def test_status_whose_reader_is_gone_before_it_prints_exits_quietly(sandbox, tenant, cli):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "poller", "--config", str(sandbox.workdir / "config.toml"), "status"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), cwd=REPO, text=True,
    )
    process.stdout.close()  # closed before the process has started up
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0 and stderr == "", stderr


# --- 5. operator commands beside a systemd service --------------------------------------------------


def test_without_state_path_a_shell_is_told_to_set_it(sandbox, tmp_path):
    """Under systemd only the unit has $STATE_DIRECTORY; a shell needs [state] path in the file."""
    config = sandbox.write_config(tmp_path / "c.toml", state={"path": None})
    for args in (("status",), ("retry", "--all-failed"), ("reset-checkpoint",)):
        run = without_secrets(config, *args)
        assert run.code == ExitCode.CONFIG
        assert "state.path: is required" in run.stderr
        assert '[state] path = "/var/lib/lead-poller/state.db"' in run.stderr


def test_with_the_documented_state_path_commands_from_a_shell_find_the_services_state(sandbox, tenant, tmp_path):
    """The README's systemd set-up: [state] path names the unit's StateDirectory=; the service runs
    with $STATE_DIRECTORY and its secrets, an operator's shell with neither."""
    state_directory = tmp_path / "var-lib-lead-poller"
    state_directory.mkdir()
    config = sandbox.write_config(tmp_path / "lead-poller.toml", state_path=state_directory / "state.db")
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    sandbox.salesforce.validation_rules.append(lambda lead: "no")
    service = run_cli("--config", config, "--run-once", env={**sandbox.env(), "STATE_DIRECTORY": str(state_directory)})
    assert service.code == 0, service.stderr

    status = without_secrets(config, "status", "--json")
    assert status.code == 0 and json.loads(status.stdout)["users"]["failed"] == 1
    assert without_secrets(config, "retry", "--all-failed").stdout.startswith("1 user(s) pending again")
    assert without_secrets(config, "reset-checkpoint").code == 0


def unit_state_directories() -> dict[str, str]:
    found = {}
    for unit in sorted((REPO / "systemd").glob("*.service")):
        (directory,) = re.findall(r"^StateDirectory=(\S+)$", unit.read_text(encoding="utf-8"), re.MULTILINE)
        found[unit.name] = directory
    return found


def test_the_readme_has_operators_keep_a_state_path_that_is_each_units_state_directory():
    section = readme_section("### Running under systemd")
    assert "remove [state] path" not in section
    documented = set(re.findall(r'\[state\] path = "([^"]+)"', section))
    for unit, directory in unit_state_directories().items():
        expected = f"/var/lib/{directory}/state.db".replace("%i", "NAME")
        assert expected in documented, (unit, expected, documented)
        assert expected.replace("NAME", "%i") in (REPO / "systemd" / unit).read_text(encoding="utf-8"), unit
    assert "sudo /opt/lead-poller/bin/lead-poller status --config /etc/lead-poller/config.toml" in section


# --- 6. packaging -----------------------------------------------------------------------------------


def test_the_licence_is_an_spdx_expression_that_the_build_backend_understands():
    """A `license = { text = ... }` table makes setuptools print a large deprecation warning on
    every install (the first `make demo`); the SPDX string needs setuptools 77 or later."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in project["project"].get("classifiers", []))  # PEP 639: not both
    (setuptools,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77


def test_state_commands_run_with_a_config_that_holds_only_the_state(sandbox, tenant, cli, tmp_path):
    tenant.user("auth0|a")
    tenant.logins("auth0|a")
    assert cli("--run-once").code == 0
    state_only = tmp_path / "state-only.toml"
    state_only.write_text(f'[state]\npath = "{sandbox.workdir / "state.db"}"\n')

    status = without_secrets(state_only, "status", "--json")
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["users"]["recorded"] == 1
    assert without_secrets(state_only, "retry", "--all-failed").code == 0
    assert without_secrets(state_only, "--run-once").code == ExitCode.CONFIG  # a cycle does need the vendors
