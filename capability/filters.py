"""FAB filters of the workflow pages and API."""

from __future__ import annotations

from typing import Any

from flask_appbuilder.models.filters import BaseFilter

from capability.models import Workflow


class LiveOnly(BaseFilter):
    """Soft-deleted workflows are gone for every reader."""

    name = "Not deleted"
    arg_name = None

    def apply(self, query: Any, value: Any) -> Any:
        return query.filter(Workflow.deleted_at.is_(None))
