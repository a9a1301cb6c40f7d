"""Issue 15, the pure parts of the safe CLI defaults: `policy check` finds every problem in
one pass (a key typo no longer hides an undefined group or an unreachable route), routes are
numbered from 1 in every message, config errors carry FILE:LINE:COLUMN, lifetimes are
positive, a date-only upper bound is the end of its day."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from scimgate.app.tokens import TokenError, parse_duration
from scimgate.cli.audit import iso_option
from scimgate.config import ConfigError, load_settings
from scimgate.policy.model import PolicyError, parse_policy

HEAD = """\
identity:
  source: header
  header: {name: X-Email, trusted_sources: [127.0.0.1/32]}
groups:
  staff: {idp_groups: [Staff]}
routes:
"""

TYPO_AND_GROUP_AND_ROUTES = (
    HEAD
    + """\
  - name: home
    from: {hosts: [app.example.com], path_prefix: /}
    allow_groups: [staff]
    alow_groups: [staff]
    to: {return: "hi"}
  - name: reports
    from: {hosts: [app.example.com], path_prefix: /reports}
    allow_groups: [finance]
    to: {return: "r"}
  - name: broken
    from: {hosts: [app.example.com], path_prefix: /b}
    allow_groups: [staff]
    to: {return: 7}
  - name: again
    from: {hosts: [app.example.com], path_prefix: /}
    allow_groups: [staff]
    to: {return: "hi"}
"""
)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    return [str(p) for p in caught.value.problems]


def test_policy_check_reports_every_kind_of_problem_in_one_pass() -> None:
    problems = problems_of(TYPO_AND_GROUP_AND_ROUTES)
    assert problems == [
        "p.yaml:10:5: routes #1.alow_groups: unknown key 'alow_groups'",
        "p.yaml:13:5: unreachable route 'reports': route 'home' (#1) matches first",
        "p.yaml:14:20: undefined policy group 'finance'",
        "p.yaml:19:18: routes #3.to.return: Input should be a valid string",
        "p.yaml:21:5: duplicate route 'again': route 'home' (#1) matches first",
    ]
    for problem in problems:
        assert re.match(r"^p\.yaml:\d+:\d+: ", problem), problem
        assert "routes.0" not in problem and "#0" not in problem  # one numbering, from 1


def test_numbering_counts_every_route_of_the_file_even_past_an_invalid_one() -> None:
    text = (
        HEAD
        + """\
  - name: bad
    from: {hosts: [app.example.com], path_prefix: /x}
    allow_groups: [staff]
    to: {return: 7}
  - name: home
    from: {hosts: [app.example.com], path_prefix: /}
    allow_groups: [staff]
    to: {return: "hi"}
  - name: shadowed
    from: {hosts: [app.example.com], path_prefix: /y}
    allow_groups: [staff]
    to: {return: "y"}
"""
    )
    problems = problems_of(text)
    # 'home' is the file's route #2, although route #1 could not be validated
    assert "p.yaml:16:5: unreachable route 'shadowed': route 'home' (#2) matches first" in (
        problems
    )


def test_an_identity_error_still_reports_every_schema_problem() -> None:
    """Without a valid identity nothing can be cross-checked; every schema problem is still
    listed, each located."""
    text = HEAD.replace("source: header", "source: nothing") + (
        "  - name: home\n    from: {path_prefix: /}\n    allow_groupz: [staff]\n"
        "    to: {return: hi}\n"
    )
    problems = problems_of(text)
    assert len(problems) >= 2
    assert all(re.match(r"^p\.yaml:\d+:\d+: ", p) for p in problems), problems
    assert any("allow_groupz" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("port: 8000\nprot: 9\n", ":2:1: unknown setting(s): prot"),
        ("port: 8000\nmax_connections: 0\n", ":2:1: max_connections must be greater than 0"),
        ("trusted_proxies:\n  - 10.0.0.0/8\n  - 10.1.2.3/8\n", ":3:5: trusted_proxies #2"),
        ("scim_front:\n  rate_limit:\n    period: 0\n", ":3:5: scim_front.rate_limit.period"),
        ("scim_front:\n  bnd: x\n", ":2:3: unknown scim_front setting(s): bnd"),
        (
            "targets:\n  - name: a\n    runtime_api: unix:/a\n    mapdir: /m\n",
            ":4:5: unknown targets #1 setting(s): mapdir",
        ),
        ("targets:\n  - name: a\n", ":2:5: targets #1.runtime_api must be a non-empty"),
        ("port: [\n", ":2:1: YAML syntax"),
        ("hard_stop_after: 0\n", ":1:1: hard_stop_after must be greater than 0"),
    ],
)
def test_config_errors_carry_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    (tmp_path / "scimgate.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(directory=tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'scimgate.yaml'}{where}"), caught.value


def test_hard_stop_after_is_read_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "scimgate.yaml").write_text("hard_stop_after: 2.5\n")
    assert load_settings(directory=tmp_path).hard_stop_after == 2.5
    (tmp_path / "scimgate.yaml").write_text("port: 8000\n")
    assert load_settings(directory=tmp_path).hard_stop_after == 60.0


@pytest.mark.parametrize("text", ["0d", "0s", "0w", "-1h", " -5m", "-0d"])
def test_zero_or_negative_lifetime_is_refused(text: str) -> None:
    with pytest.raises(TokenError, match="bad duration"):
        parse_duration(text)


def test_an_overlap_may_be_zero() -> None:
    assert parse_duration("0s", allow_zero=True).total_seconds() == 0
    assert parse_duration("90d").days == 90


@pytest.mark.parametrize(
    ("text", "date_means", "expected"),
    [
        ("2026-12-03", "end", "2026-12-03T23:59:59.999999Z"),
        ("2026-12-03", "start", "2026-12-03T00:00:00.000000Z"),
        ("20261203", "end", "2026-12-03T23:59:59.999999Z"),
        ("2026-12-03T10:00:00Z", "end", "2026-12-03T10:00:00.000000Z"),  # a time is exact
        ("2026-12-03T10:00:00+02:00", "end", "2026-12-03T08:00:00.000000Z"),
        ("2026-12-31", "end", "2026-12-31T23:59:59.999999Z"),
    ],
)
def test_date_only_bounds(text: str, date_means: str, expected: str) -> None:
    assert iso_option(text, date_means=date_means) == expected  # type: ignore[arg-type]


def test_not_a_date_is_refused() -> None:
    with pytest.raises(click.BadParameter):
        iso_option("last tuesday", date_means="end")
