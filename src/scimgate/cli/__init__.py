"""The `scimgate` command. Every subcommand takes --dir DIR (an instance made by
`scimgate up --dir DIR`) or --config FILE.

Does: parse arguments, call a use case (``scimgate.app``) or the instance (``scimgate.instance``),
print; one module per command group.
Does not: business logic, SQL, or serving (``instance.serve``).
"""

from __future__ import annotations

import click

from scimgate.cli.admins import admin_group
from scimgate.cli.audit import audit_group
from scimgate.cli.haproxy import haproxy_group
from scimgate.cli.instance import db_group, init, serve, up
from scimgate.cli.jwt import jwt_group
from scimgate.cli.policy import policy_group
from scimgate.cli.report import report_group
from scimgate.cli.sync import resync, status
from scimgate.cli.tokens import token_group

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scimgate")
def main() -> None:
    """scimgate: a SCIM 2.0 endpoint that makes HAProxy enforce what your IdP says.

    \b
    Quick start:
      scimgate up --dir ./demo      # SCIM endpoint + HAProxy with a demo policy
      scimgate token create okta --dir ./demo --expires-in 90d
    """


for command in (
    init, serve, up, token_group, db_group, audit_group, report_group, policy_group, haproxy_group,
    jwt_group, status, resync, admin_group,
):  # fmt: skip
    main.add_command(command)
