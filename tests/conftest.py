"""Shared fixtures: the real Postfix lab (skipped with a reason where it cannot run)."""

from __future__ import annotations

import pytest

from tests.lab import postfix as postfix_lab


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = postfix_lab.available()
    if reason:
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
