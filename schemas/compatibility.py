"""Schema evolution rules: can a reader with one schema version read data written with another?

Follows the Avro specification's schema resolution. valueloop keeps every released version and requires
full transitive compatibility: the newest reader reads every older writer (a new job replaying old topics),
and every older reader reads the newest writer (a consumer not yet upgraded).
"""
from __future__ import annotations

from typing import Any

from schemas.registry import SchemaRegistry

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _resolve(schema: Any, names: dict[str, dict], namespace: str | None) -> Any:
    """Replaces a named-type reference by its definition and records definitions as they appear."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        full = schema if "." in schema or namespace is None else f"{namespace}.{schema}"
        return names.get(full, names.get(schema, schema))
    if isinstance(schema, dict) and schema.get("type") in ("record", "error", "enum", "fixed"):
        ns = schema.get("namespace", namespace)
        name = schema["name"]
        names[name if "." in name or ns is None else f"{ns}.{name}"] = schema
    if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES and len(schema) == 1:
        return schema["type"]
    return schema


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return schema["type"] if schema["type"] not in _PRIMITIVES else schema["type"]
    return schema


def incompatibilities(reader: Any, writer: Any, path: str = "") -> list[str]:
    """Every reason a reader of schema `reader` cannot read data written with `writer`; empty when it can."""
    return _check(reader, writer, path or "<root>", {}, {}, None, None)


def _check(reader, writer, path, r_names, w_names, r_ns, w_ns) -> list[str]:
    reader = _resolve(reader, r_names, r_ns)
    writer = _resolve(writer, w_names, w_ns)
    r_kind, w_kind = _type_name(reader), _type_name(writer)
    if w_kind == "union":
        problems = []
        for branch in writer:
            problems += _check(reader, branch, f"{path}|{_type_name(_resolve(branch, w_names, w_ns))}", r_names, w_names, r_ns, w_ns)
        return problems
    if r_kind == "union":
        for branch in reader:
            if not _check(branch, writer, path, dict(r_names), dict(w_names), r_ns, w_ns):
                return []
        return [f"{path}: no branch of the reader's union reads the writer's {w_kind}"]
    if r_kind in _PRIMITIVES or w_kind in _PRIMITIVES:
        if r_kind == w_kind or r_kind in _PROMOTIONS.get(w_kind, ()):
            return []
        return [f"{path}: the reader's {r_kind} cannot read the writer's {w_kind}"]
    if r_kind != w_kind:
        return [f"{path}: the reader's {r_kind} cannot read the writer's {w_kind}"]
    if r_kind == "array":
        return _check(reader["items"], writer["items"], f"{path}[]", r_names, w_names, r_ns, w_ns)
    if r_kind == "map":
        return _check(reader["values"], writer["values"], f"{path}{{}}", r_names, w_names, r_ns, w_ns)
    r_short, w_short = reader["name"].rsplit(".", 1)[-1], writer["name"].rsplit(".", 1)[-1]
    if r_short != w_short and w_short not in reader.get("aliases", []):
        return [f"{path}: the reader's {r_kind} {r_short} does not match the writer's {w_short}"]
    if r_kind == "fixed":
        return [] if reader["size"] == writer["size"] else [f"{path}: fixed sizes {reader['size']} != {writer['size']}"]
    if r_kind == "enum":
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            return [f"{path}: the reader's enum {r_short} lacks symbols {missing} and has no default"]
        return []
    return _check_record(reader, writer, path, r_names, w_names)


def _check_record(reader, writer, path, r_names, w_names) -> list[str]:
    r_ns = reader.get("namespace") or (reader["name"].rsplit(".", 1)[0] if "." in reader["name"] else None)
    w_ns = writer.get("namespace") or (writer["name"].rsplit(".", 1)[0] if "." in writer["name"] else None)
    written = {}
    for field in writer["fields"]:
        written[field["name"]] = field
    problems = []
    for field in reader["fields"]:
        names = [field["name"], *field.get("aliases", [])]
        source = next((written[n] for n in names if n in written), None)
        field_path = f"{path}.{field['name']}"
        if source is None:
            if "default" not in field:
                problems.append(f"{field_path}: the reader's field has no default and the writer does not write it")
            continue
        problems += _check(field["type"], source["type"], field_path, r_names, w_names, r_ns, w_ns)
    return problems


def check_registry(registry: SchemaRegistry) -> list[str]:
    """Full transitive compatibility of every record's kept versions; each problem names both versions."""
    problems = []
    for name in registry.names:
        kept = registry.versions(name)
        for older in kept[:-1]:
            for newer in kept[kept.index(older) + 1 :]:
                for reader, writer in ((newer, older), (older, newer)):
                    for problem in incompatibilities(reader.raw, writer.raw, name):
                        problems.append(f"{name} v{reader.version} reading v{writer.version}: {problem}")
    return problems
