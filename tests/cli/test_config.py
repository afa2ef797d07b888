"""Where the client finds the server and the key: --url/--key > COLLECT_URL/COLLECT_API_KEY > `collect login`'s
file (0600), and the exit code 2 for every configuration error."""

from __future__ import annotations

import json
import stat

import pexpect

from tests.cli.conftest import COLLECT
from tests.cli.test_commands import error_line
from tests.conftest import new_key

# Nothing listens on port 1: a server that cannot be reached.
UNREACHABLE = "http://127.0.0.1:1"


def login_file(cli):
    return cli.home / ".config" / "collect" / "config.json"


def test_login_reads_the_key_from_stdin_and_stores_it_for_the_owner_only(cli):
    # When `collect login` gets the key on stdin (not a terminal), with neither variable set
    result = cli.run("login", "--url", cli.url, input=cli.key + "\n", COLLECT_URL=None, COLLECT_API_KEY=None)
    # Then the URL and key are stored in the user's config directory, readable by the owner only
    assert result.returncode == 0, result.stderr
    path = login_file(cli)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": cli.url, "api_key": cli.key}
    # And the other commands use them
    listed = cli.run("tasks", COLLECT_URL=None, COLLECT_API_KEY=None)
    assert listed.returncode == 0, listed.stderr
    # And `collect logout` removes them
    assert cli.run("logout").returncode == 0 and not path.exists()


def test_login_refuses_a_wrong_key_and_stores_nothing(cli):
    result = cli.run("login", "--url", cli.url, input="ck_wrong\n")
    assert result.returncode == 2
    assert "the API key is not valid" in error_line(result)
    assert not login_file(cli).exists()
    unreachable = cli.run("login", "--url", UNREACHABLE, input=cli.key + "\n")
    assert unreachable.returncode == 2 and "cannot reach" in error_line(unreachable)
    assert not login_file(cli).exists()


def test_login_at_a_terminal_does_not_echo_the_key(cli):
    child = pexpect.spawn(COLLECT, ["login", "--url", cli.url], env=cli.env(COLLECT_API_KEY=None),
                          cwd=str(cli.cwd), timeout=60)
    child.expect("API key: ")
    child.sendline(cli.key)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert cli.key.encode() not in child.before
    assert json.loads(login_file(cli).read_text())["api_key"] == cli.key


def test_a_flag_beats_the_environment_which_beats_the_login_file(cli, rt):
    # Given a login file with a good URL and key
    assert cli.run("login", "--url", cli.url, input=cli.key + "\n").returncode == 0
    wrong_key = new_key(rt)  # valid, but another organization's: its list is empty
    own_task = cli.run("upload", str(cli.csv_file(5, seed=30))).stdout.split()[0]

    def listed(*args, **env):
        result = cli.run(*args, "--json", **env)
        assert result.returncode == 0, result.stderr
        return [task["task_id"] for task in json.loads(result.stdout)["tasks"]]

    # The environment's key beats the file's
    assert listed("tasks", COLLECT_URL=None, COLLECT_API_KEY=None) == [own_task]
    assert listed("tasks", COLLECT_URL=None, COLLECT_API_KEY=wrong_key) == []
    # A flag beats the environment, before or after the command's name
    assert listed("tasks", "--key", cli.key, COLLECT_API_KEY=wrong_key) == [own_task]
    assert listed("--key", cli.key, "tasks", COLLECT_API_KEY=wrong_key) == [own_task]
    assert listed("--key", wrong_key, "tasks", "--key", cli.key) == [own_task]
    # The same for the URL: an unreachable one in the environment beats the file's, a flag beats both
    unreachable = cli.run("tasks", COLLECT_URL=UNREACHABLE)
    assert unreachable.returncode == 2 and "cannot reach the server at http://127.0.0.1:1" in error_line(unreachable)
    assert listed("tasks", "--url", cli.url, COLLECT_URL=UNREACHABLE) == [own_task]
    assert listed("--url", cli.url, "tasks", COLLECT_URL=UNREACHABLE) == [own_task]


def test_the_login_files_key_goes_only_to_the_server_it_was_stored_for(cli):
    # Given a login file for the live gateway
    assert cli.run("login", "--url", cli.url, input=cli.key + "\n").returncode == 0
    # When the environment names another server and no key
    result = cli.run("tasks", COLLECT_URL=UNREACHABLE, COLLECT_API_KEY=None)
    # Then the stored key is not sent there: the client asks for a key instead
    assert result.returncode == 2
    assert "no API key" in error_line(result)
    # While the stored server itself still gets it
    assert cli.run("tasks", COLLECT_URL=None, COLLECT_API_KEY=None).returncode == 0


def test_configuration_errors_exit_2_with_one_line(cli):
    # No key anywhere
    missing = cli.run("tasks", COLLECT_API_KEY=None)
    assert missing.returncode == 2 and "no API key" in error_line(missing)
    # A wrong key: the 401 problem, with where the key came from
    wrong = cli.run("tasks", COLLECT_API_KEY="ck_nope")
    assert wrong.returncode == 2
    assert error_line(wrong) == ("Error: Unauthorized: the API key is not valid "
                                 "(check --key, COLLECT_API_KEY or `collect login`)")
    # A URL that is not http(s)
    assert cli.run("tasks", "--url", "localhost:8000").returncode == 2
