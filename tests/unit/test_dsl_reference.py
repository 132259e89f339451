"""docs/dsl_reference.md cannot drift from the language it documents.

The reference marks what a test can check with HTML comments (invisible once rendered)
right above a table, and with the info string of its code blocks:

- ``<!-- fields: PATH -->``: a field table of the object at PATH in the published JSON
  Schema (``$`` the document, ``params.*`` a parameter, ``tasks[]`` a task,
  ``tasks[].with(http)`` the ``with`` of a type, ``tasks[].with(http).auth`` ...). Its
  fields must be exactly the schema's properties, with the schema's required fields,
  defaults, enums, patterns and bounds; every object of the schema needs a table, and
  every registered task type a ``with`` table;
- ``<!-- statuses: run|task -->``, ``<!-- trigger-rules -->``, ``<!-- backoff ... -->``,
  ``<!-- durations -->``, ``<!-- expressions -->``: checked against the statuses, the
  engine's trigger rules, ``RetrySpec.wait_seconds``, ``parse_duration`` and ``render``;
- code blocks: ```` ```yaml ```` / ```` ```json ```` is a workflow that must validate
  (with ``validate_source`` and against the JSON Schema); ```` ```yaml invalid ```` must
  fail with exactly the ``# error: <path>: <message>`` lines at its end; the one
  ```` ```json scope ```` block is the scope of the expression table. Any other marker
  fails, so no example escapes the checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from capability import dsl
from capability.connectors import registry as connectors
from capability.dsl.durations import DURATION_PATTERN
from capability.dsl.fields import TEMPLATE_JSON_SCHEMA
from capability.engine.decide import Verdict, trigger_verdict

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "dsl_reference.md"
TEXT = REFERENCE.read_text(encoding="utf-8")
LINES = TEXT.splitlines()
# Every task type the application registers is documented, the connectors' too: they
# join at the application's start, so this module registers them before reading.
connectors.install()
SCHEMA = dsl.definition_json_schema()
TEMPLATE_PATTERN = TEMPLATE_JSON_SCHEMA["pattern"]
NOT_SET = "—"

# ---------------------------------------------------------------- reading the markdown


@dataclass(frozen=True)
class Table:
    marker: str
    line: int  # 1-based, of the marker
    header: list[str]
    rows: list[list[str]]

    def column(self, name: str) -> int:
        assert name in self.header, f"line {self.line}: the table has no column {name!r}"
        return self.header.index(name)


@dataclass(frozen=True)
class Block:
    line: int  # 1-based, of the opening fence
    language: str
    markers: frozenset[str]
    text: str
    before: str  # the last non-blank line before the fence


def _cells(row: str) -> list[str]:
    """A table row's cells, ``\\|`` (a pipe inside a cell) read as ``|``."""
    parts = re.split(r"(?<!\\)\|", row.strip())
    return [cell.strip().replace("\\|", "|") for cell in parts[1:-1]]


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _only_code(cell: str) -> str:
    spans = _code(cell)
    assert len(spans) == 1, f"expected one `code` in {cell!r}"
    return spans[0]


def _tables() -> list[Table]:
    tables = []
    for index, line in enumerate(LINES):
        found = re.fullmatch(r"<!-- (.+?) -->", line.strip())
        if not found:
            continue
        rows = []
        for row in LINES[index + 1:]:
            if not row.startswith("|"):
                if rows or row.strip():
                    break
                continue
            rows.append(_cells(row))
        assert len(rows) >= 3, f"line {index + 1}: no table under the marker {line!r}"
        assert set("".join(rows[1])) <= set("-: "), f"line {index + 1}: no header row"
        tables.append(Table(found.group(1), index + 1, rows[0], rows[2:]))
    return tables


def _blocks() -> Iterator[Block]:
    index = 0
    while index < len(LINES):
        opening = re.fullmatch(r"```(\S*)(.*)", LINES[index])
        if not opening:
            index += 1
            continue
        end = LINES.index("```", index + 1)
        before = next((line for line in reversed(LINES[:index]) if line.strip()), "")
        yield Block(index + 1, opening.group(1), frozenset(opening.group(2).split()),
                    "\n".join(LINES[index + 1:end]) + "\n", before)
        index = end + 1


TABLES = _tables()
BLOCKS = list(_blocks())
EXAMPLES = [block for block in BLOCKS if block.language in ("yaml", "yml", "json")]


def _table(marker: str) -> Table:
    found = [table for table in TABLES if table.marker == marker]
    assert len(found) == 1, f"the reference needs exactly one table marked <!-- {marker} -->"
    return found[0]


def _example_id(block: Block) -> str:
    return f"line{block.line}"


# ---------------------------------------------------------------- reading the schema


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    """Follow ``$ref``, and from an ``anyOf`` the branch that is an object (or a list of
    objects: ``attachments[]``)."""
    while True:
        if "$ref" in node:
            node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in node and "properties" not in node:
            objects = [branch for branch in node["anyOf"]
                       if "$ref" in branch or "properties" in branch or "anyOf" in branch
                       or (branch.get("type") == "array" and "$ref" in branch.get("items", {}))]
            assert objects, f"no object in {node}"
            node = objects[0]
        else:
            return node


def _resolve(path: str) -> dict[str, Any]:
    """The schema object a field table documents (see the module's docstring)."""
    node: dict[str, Any] = SCHEMA
    if path == "$":
        return node
    for token in path.split("."):
        if token == "*":
            node = _deref(node["additionalProperties"])
            continue
        found = re.fullmatch(r"(\w+)(\[\])?(?:\((\w+)\))?", token)
        assert found, f"bad path {path!r}"
        name, is_list, task_type = found.groups()
        if task_type:
            assert name == "with", path
            rules = [rule for rule in node.get("allOf", [])
                     if rule["if"]["properties"]["type"]["const"] == task_type]
            assert rules, f"the schema has no task type {task_type!r}"
            node = _deref(rules[0]["then"]["properties"]["with"])
            continue
        node = _deref(node["properties"][name])
        if is_list:
            node = _deref(node["items"])
    return node


def _own(prop: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The property's schema and its ``anyOf`` branches, not the objects it refers to
    (an object's own fields have their own table). A ``$ref`` to a non-object (an enum
    such as TriggerRule) is followed."""
    stack = [prop]
    while stack:
        node = stack.pop()
        if "$ref" in node:
            target = _deref(node)
            if "properties" not in target:
                stack.append(target)
            continue
        yield node
        stack.extend(node.get("anyOf", []))


def _enum(prop: dict[str, Any]) -> list[Any]:
    return [value for node in _own(prop) for value in node.get("enum", [])]


def _patterns(prop: dict[str, Any]) -> set[str]:
    return {node["pattern"] for node in _own(prop) if "pattern" in node} - {TEMPLATE_PATTERN}


def _is_duration(prop: dict[str, Any]) -> bool:
    return DURATION_PATTERN in _patterns(prop)


def _bounds(prop: dict[str, Any]) -> set[float]:
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems",
            "maxItems")
    return {node[key] for node in _own(prop) for key in keys if key in node}


def _templatable(prop: dict[str, Any]) -> bool:
    """Whether a ``{{ ... }}`` text passes where the field is saved."""
    branches = [node for node in _own(prop) if node.get("type") != "null"]
    if any(node.get("pattern") == TEMPLATE_PATTERN for node in branches):
        return True
    if any(key in node for node in branches for key in ("pattern", "enum", "const")):
        return False
    leaves = [node for node in branches if "anyOf" not in node]
    return any(node.get("type") in (None, "string") or "string" in node.get("type", [])
               for node in leaves)


def _schema_objects() -> dict[str, dict[str, Any]]:
    return {name: node for name, node in SCHEMA["$defs"].items() if "properties" in node}


def _task_types() -> set[str]:
    return {rule["if"]["properties"]["type"]["const"]
            for rule in SCHEMA["$defs"]["TaskSpec"]["allOf"]}


FIELD_TABLES = [table for table in TABLES if table.marker.startswith("fields: ")]


def _path(table: Table) -> str:
    return table.marker.removeprefix("fields: ")


# ---------------------------------------------------------------- field tables


def test_every_object_of_the_schema_has_a_field_table():
    documented = [_resolve(_path(table)) for table in FIELD_TABLES]
    assert any(node is SCHEMA for node in documented), "no table of the top-level fields"
    missing = [name for name, node in _schema_objects().items()
               if not any(node is other for other in documented)]
    assert not missing, f"objects of the JSON Schema without a field table: {missing}"


def test_every_registered_task_type_has_its_with_table_and_section():
    with_tables = {re.fullmatch(r"tasks\[\]\.with\((\w+)\)", _path(table))
                   for table in FIELD_TABLES}
    documented = {found.group(1) for found in with_tables if found}
    assert documented == _task_types() == set(dsl.registry.names())
    for name in dsl.registry.names():
        assert f"### `{name}`" in LINES, f"no section '### `{name}`'"


@pytest.mark.parametrize("table", FIELD_TABLES, ids=_path)
def test_a_field_table_lists_exactly_the_schema_fields(table):
    node = _resolve(_path(table))
    names = [_only_code(row[0]) for row in table.rows]
    assert len(names) == len(set(names)), f"{_path(table)}: a field is listed twice"
    schema_names = set(node["properties"])
    assert not schema_names - set(names), (
        f"{_path(table)}: fields of the schema missing from the reference (line "
        f"{table.line}): {sorted(schema_names - set(names))}")
    assert not set(names) - schema_names, (
        f"{_path(table)}: fields in the reference that the schema does not have: "
        f"{sorted(set(names) - schema_names)}")


@pytest.mark.parametrize("table", FIELD_TABLES, ids=_path)
def test_a_field_table_states_what_the_schema_states(table):
    node = _resolve(_path(table))
    required = set(node.get("required", []))
    column = {name: table.column(name)
              for name in ("field", "type", "required", "default", "description")}
    is_with = ".with(" in _path(table)
    if is_with:
        column["templated"] = table.column("templated")
    for row in table.rows:
        name = _only_code(row[0])
        prop = node["properties"][name]
        where = f"{_path(table)}.{name} (line {table.line})"
        kind, default = row[column["type"]], row[column["default"]]

        assert row[column["required"]] == ("yes" if name in required else "no"), where
        if name in required:
            assert default == NOT_SET, f"{where}: a required field has no default"
        elif "default" in prop:
            written = None if default == NOT_SET else yaml.safe_load(_only_code(default))
            if written is not None and _is_duration(prop):
                written = dsl.parse_duration(written)  # `5m` is 300.0
                same = written == prop["default"]
            else:  # as JSON: 1 is not true, "1" is not 1
                same = json.dumps(written) == json.dumps(prop["default"])
            assert same, (f"{where}: the reference says default {default}, the schema "
                          f"{prop['default']!r}")
        else:
            assert default, f"{where}: say what an absent field means"

        enum = _enum(prop)
        if enum:
            assert set(_code(kind)) == set(enum), f"{where}: the values are {enum}"
        for pattern in _patterns(prop) - {DURATION_PATTERN}:
            assert pattern in _code(kind), f"{where}: the type should show `{pattern}`"
        if _is_duration(prop):
            assert "duration" in kind, f"{where}: a duration"
        text = " ".join(row[1:])
        for bound in _bounds(prop):
            number = f"{bound:g}"
            assert re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d.,]\d)", text), (
                f"{where}: the bound {number} of the schema is not in the row")
        if is_with:
            expected = "yes" if _templatable(prop) else "no"
            assert row[column["templated"]].split()[0] == expected, (
                f"{where}: templated should be {expected}")


def test_every_pattern_of_the_schema_is_written_in_the_reference():
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.add(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    code = {span for line in LINES for span in _code(line.replace("\\|", "|"))}
    missing = found - {TEMPLATE_PATTERN} - code
    assert not missing, f"patterns of the schema not in the reference: {missing}"


# ---------------------------------------------------------------- statuses and rules


def test_run_and_task_statuses():
    for marker, enum in (("statuses: run", dsl.RunStatus), ("statuses: task", dsl.TaskStatus)):
        table = _table(marker)
        assert [_only_code(row[0]) for row in table.rows] == [s.value for s in enum], marker
    task = _table("statuses: task")
    finished = {_only_code(row[0]) for row in task.rows if row[task.column("finished")] == "yes"}
    assert finished == {s.value for s in dsl.FINISHED_TASK_STATUSES}


def test_the_trigger_rule_matrix_is_what_the_engine_decides():
    table = _table("trigger-rules")
    words = {"runs": Verdict.RUN, "skipped": Verdict.SKIP,
             "upstream_failed": Verdict.UPSTREAM_FAILED}
    scenarios = [_code(cell) for cell in table.header[1:]]
    assert all(scenarios)
    rules = [_only_code(row[0]) for row in table.rows]
    assert set(rules) == {rule.value for rule in dsl.TriggerRule}
    assert set(rules) == set(SCHEMA["$defs"]["TriggerRule"]["enum"])
    for row in table.rows:
        rule = _only_code(row[0])
        for upstream, cell in zip(scenarios, row[1:], strict=True):
            assert words[cell] == trigger_verdict(rule, upstream), (rule, upstream)


def test_the_backoff_table_is_the_formula():
    table = _table_starting("backoff ")
    settings = dict(item.split("=") for item in table.marker.split()[1:])
    for column, backoff in enumerate(table.header[1:], start=1):
        spec = dsl.RetrySpec(backoff=_only_code(backoff), jitter=False, **settings)
        for row in table.rows:
            waited = spec.wait_seconds(int(row[0]))
            assert dsl.parse_duration(row[column]) == waited, (backoff, row)
            assert spec.model_copy(update={"jitter": True}).wait_seconds(
                int(row[0]), rand=lambda: 0.0) == waited / 2
    backoffs = {_only_code(cell) for cell in table.header[1:]}
    assert backoffs == set(SCHEMA["$defs"]["RetrySpec"]["properties"]["backoff"]["enum"])


def _table_starting(prefix: str) -> Table:
    found = [table for table in TABLES if table.marker.startswith(prefix)]
    assert len(found) == 1, prefix
    return found[0]


def test_the_durations_table():
    for row in _table("durations").rows:
        written = yaml.safe_load(_only_code(row[0]))
        if row[1] == "invalid":
            with pytest.raises(ValueError):
                dsl.parse_duration(written)
        else:
            assert dsl.parse_duration(written) == float(row[1]), row


def _scope() -> dict[str, Any]:
    scopes = [block for block in BLOCKS if "scope" in block.markers]
    assert len(scopes) == 1
    return dict(json.loads(scopes[0].text))


def test_the_expression_table_is_what_rendering_gives():
    scope = _scope()
    for row in _table("expressions").rows:
        expression = _only_code(row[0])
        if row[1].startswith("fails:"):
            with pytest.raises(dsl.ExpressionError) as failure:
                dsl.render(expression, scope, "with.x")
            assert failure.value.cause == _only_code(row[1]), expression
        else:
            value = dsl.render(expression, scope, "with.x")
            expected = json.loads(_only_code(row[1]))
            assert json.dumps(value, sort_keys=True) == json.dumps(expected, sort_keys=True), (
                expression)


# ---------------------------------------------------------------- examples


def test_every_code_block_is_marked_as_something_the_tests_check():
    assert len(EXAMPLES) >= 20
    for block in EXAMPLES:
        allowed = {frozenset(), frozenset({"invalid"})}
        if block.language == "json":
            allowed = {frozenset(), frozenset({"scope"})}
        assert block.markers in allowed, f"line {block.line}: unknown marker {block.markers}"


def _definitions() -> list[Block]:
    return [block for block in EXAMPLES if not block.markers]


@pytest.mark.parametrize("block", _definitions(), ids=_example_id)
def test_a_valid_example_validates(block):
    assert block.before.startswith("Valid"), f"line {block.line}: say 'Valid' before it"
    fmt = "json" if block.language == "json" else "yaml"
    result = dsl.validate_source(block.text, fmt)
    assert result.errors == [], f"example at line {block.line}"

    import jsonschema

    data = dsl.load_source(block.text, fmt)
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    assert errors == [], f"example at line {block.line} against the JSON Schema"


@pytest.mark.parametrize("block", [b for b in EXAMPLES if "invalid" in b.markers],
                         ids=_example_id)
def test_an_invalid_example_fails_with_the_errors_it_shows(block):
    assert block.before.startswith("Invalid"), f"line {block.line}: say 'Invalid' before it"
    expected = [line.removeprefix("# error: ").split(": ", 1)
                for line in block.text.splitlines() if line.startswith("# error: ")]
    assert expected, f"line {block.line}: list the errors as '# error: <path>: <message>'"
    result = dsl.validate_source(block.text, "json" if block.language == "json" else "yaml")
    assert [[e["path"], e["message"]] for e in result.errors] == expected


def test_every_task_type_has_a_valid_example():
    used: set[str] = set()
    for block in _definitions():
        data = dsl.load_source(block.text)
        for task in data["tasks"]:
            used.add(task["type"])
            used.add((task.get("compensate") or {}).get("type"))
    assert set(dsl.registry.names()) <= used


# ---------------------------------------------------------------- where it is linked


def test_the_editor_and_the_user_guide_link_the_reference():
    root = REFERENCE.parents[1]
    editor = (root / "templates" / "workflows" / "editor.html").read_text(encoding="utf-8")
    assert "url_for('WorkflowView.reference')" in editor and "DSL reference" in editor
    guide = (root / "docs" / "user_guide.md").read_text(encoding="utf-8")
    assert "(dsl_reference.md)" in guide and "/work/shared" not in guide


def test_the_app_serves_the_reference_to_readers():
    from capability import views

    assert views.PERMISSIONS["reference"] == "read"  # can_read on Workflows
    assert "reference" in views.WorkflowView.include_route_methods
    assert views.DSL_REFERENCE == REFERENCE
