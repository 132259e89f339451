"""``shout``: upper-cases text, a number of times. A whole connector in a package of its
own, registered through the ``apg.connectors`` entry point (see pyproject.toml and
docs/connector_development.md)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from capability.connectors.sdk import Connector, ConnectorError, Context, Templated, With


class ShoutWith(With):
    """Upper-cases text, times times. Output: {"text": the result, "length": its length}."""

    text: str = Field(min_length=1, description="what to shout")
    times: Templated[int] = Field(default=1, ge=1, le=10, description="how many times")


class Shout(Connector):
    type = "shout"
    With = ShoutWith
    example = {"text": "{{ params.name }}", "times": 2}

    def execute(self, context: Context) -> Any:
        with_: ShoutWith = context.with_
        if with_.text.strip() == "":
            raise ConnectorError("with.text: nothing to shout", retriable=False)
        context.log("info", f"shouting {len(with_.text)} characters {with_.times} times")
        text = " ".join([with_.text.upper()] * with_.times)
        return {"text": text, "length": len(text)}
