"""Definitions for the DSL tests: the contract's example and short ways to write
tasks and read errors."""

from __future__ import annotations

import yaml

from capability import dsl

# The example of DSL.md, verbatim.
EXAMPLE = """\
name: order-sync                 # required; ^[a-z][a-z0-9_-]{0,62}$; unique per team
description: Pull new orders and push them to the warehouse
params:                          # typed run inputs
  since: {type: string, default: "1970-01-01", description: "ISO date"}
  limit: {type: integer, default: 100}
  dry_run: {type: boolean, required: true}
defaults:                        # applied to every task that does not set its own
  retry: {max_attempts: 3}
  timeout: 30s
  queue: default
max_active_runs: 5               # further runs of this workflow wait in `queued`
tasks:                           # 1..1000 tasks; order in the list does not matter
  - id: fetch                    # required; ^[a-z][a-z0-9_]{0,62}$; unique
    type: http                   # required; a registered task type
    with:                        # type-specific parameters; strings are templates
      method: GET
      url: "https://shop.example/api/orders?since={{ params.since }}"
    retry: {max_attempts: 5, backoff: exponential, delay: 1s, max_delay: 1m, jitter: true}
    timeout: 20s
  - id: push
    type: http
    depends_on: [fetch]
    for_each: "{{ tasks.fetch.output.json.orders }}"
    max_parallel: 4
    with: {method: POST, url: "https://wh.example/orders", json: "{{ item }}"}
    compensate: {type: http, with: {method: DELETE, url: "https://wh.example/orders/{{ item.id }}"}}
  - id: notify
    type: noop
    depends_on: [push]
    trigger_rule: all_done
    when: "{{ tasks.push.status == 'failed' }}"
"""


def example() -> dict:
    return yaml.safe_load(EXAMPLE)


def errors_of(data) -> list[tuple[str, str]]:
    return [(e["path"], e["message"]) for e in dsl.validate_definition(data).errors]


def tasks(*specs: dict) -> dict:
    return {"name": "wf", "tasks": list(specs)}


def noop(task_id: str, **extra) -> dict:
    return {"id": task_id, "type": "noop", **extra}
