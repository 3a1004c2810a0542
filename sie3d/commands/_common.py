"""What subcommands share: the user-error type (the config arguments are :mod:`sie3d.config_args`)."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 1."""
