"""Every kept version of every event schema, looked up by record name or by writer fingerprint."""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

AVRO_DIR = Path(__file__).parent / "avro"
_FILE_NAME = re.compile(r"^(?P<stem>[a-z_]+)\.v(?P<version>\d+)\.avsc$")


@dataclasses.dataclass(frozen=True)
class SchemaVersion:
    """One released version of one record schema."""

    name: str  # the record's full name, e.g. io.valueloop.events.Impression
    version: int
    path: Path
    raw: dict
    parsed: dict
    fingerprint: bytes  # CRC-64-AVRO of the parsing canonical form, little-endian as written on the wire

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def load_version(path: Path) -> SchemaVersion:
    """Parses one `<stem>.v<N>.avsc` file."""
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: schema files are named <stem>.v<N>.avsc, e.g. impression.v2.avsc")
    raw = json.loads(path.read_text())
    parsed = fastavro.parse_schema(raw)
    canonical = to_parsing_canonical_form(raw)
    return SchemaVersion(
        name=f"{raw['namespace']}.{raw['name']}",
        version=int(match["version"]),
        path=path,
        raw=raw,
        parsed=parsed,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


class SchemaRegistry:
    """The schemas of one directory: each record name with its versions, oldest first."""

    def __init__(self, directory: Path = AVRO_DIR):
        self.directory = Path(directory)
        versions = [load_version(p) for p in sorted(self.directory.glob("*.avsc"))]
        if not versions:
            raise FileNotFoundError(f"no *.avsc schemas under {self.directory}")
        self._by_name: dict[str, list[SchemaVersion]] = {}
        for v in versions:
            self._by_name.setdefault(v.short_name, []).append(v)
        for name, kept in self._by_name.items():
            kept.sort(key=lambda v: v.version)
            numbers = [v.version for v in kept]
            if numbers != list(range(1, len(kept) + 1)):
                raise ValueError(f"{self.directory}: {name} versions {numbers} are not 1..N without gaps")
        self._by_fingerprint = {v.fingerprint: v for v in versions}
        if len(self._by_fingerprint) != len(versions):
            raise ValueError(f"{self.directory}: two schema files have the same canonical form")

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[SchemaVersion]:
        try:
            return list(self._by_name[name])
        except KeyError:
            raise KeyError(f"no schema named {name!r}; known: {', '.join(self.names)}") from None

    def latest(self, name: str) -> SchemaVersion:
        return self.versions(name)[-1]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fp)


@functools.cache
def default_registry() -> SchemaRegistry:
    """The schemas shipped in `schemas/avro`."""
    return SchemaRegistry(AVRO_DIR)
