"""`brainscore` commands of this group (filled in by its issue)."""
import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the `brainscore` parser."""
