"""Shared console output: errors, issue lists and JSON, on a rich console."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..errors import GraphValidationError

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {escape(message)}")


def print_graph_issues(error: GraphValidationError) -> None:
    where = f" in {error.source}" if error.source else ""
    stderr.print(f"[bold red]invalid graph{escape(where)}[/]: {len(error.issues)} problem(s)")
    for issue in error.issues:
        node = f" [dim](node {escape(issue.node)})[/]" if issue.node else ""
        stderr.print(f"  [yellow]{escape(issue.path)}[/]: {escape(issue.message)}{node}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
