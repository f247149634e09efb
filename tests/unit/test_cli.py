"""The `steno` command: infra's own subcommands plus those the components register as entry points."""

import pytest

from infra import cli, components
from ingest_api.auth import user_from_token


def test_every_component_command_is_registered() -> None:
    assert set(components.commands()) == {"analytics", "export", "replay", "token"}


def test_a_registered_command_runs_with_its_own_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "alice"]) == 0
    assert user_from_token(capsys.readouterr().out.strip()) == "alice"


def test_a_registered_command_refuses_what_it_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["replay", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
