"""docs/config-reference.md, generated from the config models so the docs cannot drift.

The page is rendered from the JSON Schema of the server config built for the *built-in*
plugins only (the entry points of the ``vfsframe`` distribution), so third-party packages
installed next to vfsframe do not change it. Every model reached from the top level gets a
section: the server, the share, each backend and middleware, and the tables nested in them
(acl rules, overlay layers, object stores, ...). A model that declares
``json_schema_extra={"examples": [...]}`` gets its examples rendered as TOML.

Regenerate with ``python -m vfsframe.docgen`` (or print it: ``vfsframe schema --markdown``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.metadata import distribution
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from vfsframe.config.models import ConfigModels
from vfsframe.plugin import ENTRY_POINT_GROUP, PluginRegistry, PluginType

BUILTIN_DISTRIBUTION = "vfsframe"
# Models defined in these packages are vfsframe's own; any other (a third-party object store,
# say) is left out of the reference.
BUILTIN_PACKAGES = ("vfsframe", "vfsframe_plugins")
# pydantic's JSON Schema of ByteSize: a string with a unit, or a number of bytes.
BYTE_SIZE_PATTERN = r"^\s*(\d*\.?\d+)\s*(\w+)?"
CLASS_KEY = "x-vfsframe-class"
# Models with a section of their own at the top of the page, not nested under a parent.
TOP_SECTIONS = ("ServerConfig", "ShareConfig")

HEADER = """\
# Configuration reference

<!-- Generated from the pydantic config models by `python -m vfsframe.docgen`; do not edit.
     A test fails when this file and the models disagree. -->

Every option of a vfsframe config file, generated from the config models of vfsframe and its
built-in plugins (third-party plugins document themselves: `vfsframe plugins`, `vfsframe
schema`). Files are TOML, YAML or JSON with the same structure; `vfsframe check CONFIG`
validates one and names the field path and the reason of each problem.

Types: a *byte size* is a number of bytes or a string with a unit (`"512MiB"`, `"2GB"`); a
*path* is a host path; *absent* means the option is left out (TOML has no null). A *table*
is a TOML table (`[share.backend]`, or inline `{ type = "memory" }`); backend and middleware
tables say which plugin they configure with `type`.
"""


def builtin_registry() -> PluginRegistry:
    """The plugins vfsframe itself registers, whatever else is installed."""
    entry_points = distribution(BUILTIN_DISTRIBUTION).entry_points
    types: list[PluginType] = []
    for ep in sorted(entry_points, key=lambda ep: ep.name):
        if ep.group == ENTRY_POINT_GROUP:
            loaded = ep.load()
            types += loaded if isinstance(loaded, list | tuple) else [loaded]
    return PluginRegistry(types)


def _class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _class_recording_schema(classes: dict[str, type[BaseModel]]) -> type[GenerateJsonSchema]:
    class ClassRecordingSchema(GenerateJsonSchema):
        """Marks each model's definition with its class (and keeps the class), so sections
        know their plugin, third-party models can be told apart, and defaults made by a
        ``default_factory`` (absent from JSON Schema) can be asked of the model."""

        def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
            value = super().model_schema(schema)
            key = _class_key(schema["cls"])
            classes[key] = schema["cls"]
            value[CLASS_KEY] = key
            return value

    return ClassRecordingSchema


@dataclass
class _Section:
    def_name: str
    anchor: str
    heading: str
    path: str  # how a user reaches the table: "share", "acl.rules[]", ...


class ReferenceWriter:
    """Renders the JSON Schema of one ConfigModels as Markdown."""

    def __init__(self, models: ConfigModels) -> None:
        self.classes: dict[str, type[BaseModel]] = {}
        schema = models.server.model_json_schema(
            by_alias=True, schema_generator=_class_recording_schema(self.classes)
        )
        self.defs: dict[str, dict[str, Any]] = schema.pop("$defs", {})
        self.defs["ServerConfig"] = schema
        self.defs = {name: d for name, d in self.defs.items() if _is_builtin(d)}
        self.plugins: dict[str, tuple[str, str]] = {}  # def name -> (kind, type name)
        registry = models.registry
        for kind, table in (("backend", registry.backends), ("middleware", registry.middleware)):
            for name, plugin in table.items():
                def_name = self._def_of(plugin.config)
                if def_name is not None:
                    self.plugins[def_name] = (kind, name)
        self.rendered: set[str] = set()

    def _def_of(self, cls: type[BaseModel]) -> str | None:
        key = _class_key(cls)
        for name, definition in self.defs.items():
            if definition.get(CLASS_KEY) == key:
                return name
        return None

    # -- anchors and names ---------------------------------------------------------------

    def anchor(self, def_name: str) -> str:
        if def_name in self.plugins:
            kind, name = self.plugins[def_name]
            return f"{kind}-{name}"
        return {"ServerConfig": "top-level", "ShareConfig": "share"}.get(def_name, def_name.lower())

    def link(self, def_name: str) -> str:
        if def_name in self.plugins:
            return f"[`{self.plugins[def_name][1]}`](#{self.anchor(def_name)})"
        tag = _type_tag(self.defs[def_name])
        title = "`[[share]]`" if def_name == "ShareConfig" else self.defs[def_name].get("title")
        text = f"`{tag}`" if tag else title or def_name
        return f"[{text}](#{self.anchor(def_name)})"

    # -- the page ------------------------------------------------------------------------

    def render(self) -> str:
        out = [HEADER]
        out += self._section(_Section("ServerConfig", "top-level", "## The top level", ""))
        out += self._section(_Section("ShareConfig", "share", "## A share: `[[share]]`", "share"))
        for kind, title in (("backend", "Backends"), ("middleware", "Middleware")):
            table = "`[share.backend]`" if kind == "backend" else "`[[share.middleware]]`"
            out.append(f"## {title}\n\nThe `type` of a {table} table picks one.\n")
            for def_name, (plugin_kind, name) in sorted(
                self.plugins.items(), key=lambda item: item[1][1]
            ):
                if plugin_kind == kind:
                    heading = f"### {kind} `{name}`"
                    section = _Section(def_name, self.anchor(def_name), heading, name)
                    out += self._section(section)
        return "\n".join(out).rstrip() + "\n"

    def _section(self, section: _Section) -> list[str]:
        """A model's section, then the sections of the tables it nests (not plugins)."""
        if section.def_name in self.rendered:
            return []
        self.rendered.add(section.def_name)
        definition = self.defs[section.def_name]
        lines = [f'<a id="{section.anchor}"></a>', "", section.heading, ""]
        description = _prose(definition.get("description", ""))
        if description:
            lines += [description, ""]
        lines += self._table(definition)
        lines += self._examples(section.def_name, definition)
        level = section.heading.split()[0] + "#"
        for name, prop in self._nested_tables(definition):
            many = definition["properties"][prop].get("type") == "array"
            path = f"{section.path}.{prop}{'[]' if many else ''}".lstrip(".")
            tag = _type_tag(self.defs[name])
            heading = f"{level} `{path}`" + (f" type `{tag}`" if tag else "")
            lines += self._section(_Section(name, self.anchor(name), heading, path))
        return lines

    def _nested_tables(self, definition: dict[str, Any]) -> list[tuple[str, str]]:
        """(model, property) of the non-plugin models this one's properties reference."""
        seen: dict[str, str] = {}
        for prop in _ordered_properties(definition):
            for ref in _refs(definition["properties"][prop]):
                if (
                    ref in self.defs
                    and ref not in self.plugins
                    and ref not in TOP_SECTIONS
                    and ref not in seen
                ):
                    seen[ref] = prop
        return list(seen.items())

    def _table(self, definition: dict[str, Any]) -> list[str]:
        properties = definition.get("properties", {})
        required = set(definition.get("required", ()))
        rows = ["| option | type | default | description |", "|---|---|---|---|"]
        for name in _ordered_properties(definition):
            prop = properties[name]
            if name == "type" and "const" in prop:
                rows.insert(0, f"`type = {json.dumps(prop['const'])}`\n")
                continue
            default = "**required**" if name in required else self._default(definition, name, prop)
            cells = [f"`{name}`", self.type_text(prop), default, _prose(prop.get("description"))]
            rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        if len(rows) == 2 or (len(rows) == 3 and rows[0].startswith("`type")):
            return [*rows[:-2], "No options.", ""] if rows[0].startswith("`type") else []
        return [*rows, ""]

    def _default(self, definition: dict[str, Any], name: str, prop: dict[str, Any]) -> str:
        if "default" in prop:
            value = prop["default"]
        else:  # a default_factory: pydantic leaves it out of the schema; ask the model
            value = _factory_default(self.classes[definition[CLASS_KEY]], name)
        if value is None:
            return "absent"
        if name.endswith("_mode") and isinstance(value, int):  # permission bits read as octal
            return f"`0o{value:o}`"
        return f"`{toml_value(value)}`"

    def _examples(self, def_name: str, definition: dict[str, Any]) -> list[str]:
        examples = definition.get("examples") or []
        # The JSON Schema sorts keys; the model's own examples keep the author's order.
        extra = self.classes[definition[CLASS_KEY]].model_config.get("json_schema_extra")
        if isinstance(extra, dict) and extra.get("examples"):
            examples = extra["examples"]
        if not examples:
            return []
        header = None
        if def_name in self.plugins:
            kind = self.plugins[def_name][0]
            header = "[share.backend]" if kind == "backend" else "[[share.middleware]]"
        lines = ["Example:" if len(examples) == 1 else "Examples:", ""]
        for example in examples:
            lines.append("```toml")
            if header:
                lines.append(header)
            lines += [f"{key} = {toml_value(value)}" for key, value in example.items()]
            lines += ["```", ""]
        return lines

    # -- types ---------------------------------------------------------------------------

    def type_text(self, prop: dict[str, Any]) -> str:
        if "$ref" in prop:
            return self._ref_text(_ref_name(prop["$ref"]))
        for key in ("anyOf", "oneOf"):
            if key in prop:
                return self._union_text(prop[key])
        if "const" in prop:
            return f"`{toml_value(prop['const'])}`"
        if "enum" in prop:
            return " \\| ".join(f"`{toml_value(v)}`" for v in prop["enum"])
        kind = prop.get("type")
        if kind == "array":
            item = self.type_text(prop.get("items", {}))
            text = f"list of {item.replace(' table', ' tables')}"
        elif kind == "string" and prop.get("format") == "path":
            text = "path"
        elif kind == "string" and prop.get("format") == "password":
            text = "string (secret)"
        elif kind == "object" or kind is None:
            text = "table" if kind == "object" else "any"
        else:
            text = {"integer": "integer", "number": "number", "boolean": "boolean"}.get(
                kind, "string"
            )
        constraints = _constraints(prop)
        return f"{text} ({constraints})" if constraints else text

    def _ref_text(self, def_name: str) -> str:
        if def_name not in self.defs:
            return "table"
        return f"{self.link(def_name)} table"

    def _union_text(self, members: list[dict[str, Any]]) -> str:
        if _is_byte_size(members):
            return "byte size"
        kept = [m for m in members if m.get("type") != "null" and _ref_kept(m, self.defs)]
        flat: list[dict[str, Any]] = []
        for member in kept:  # Optional[Union[...]]: anyOf [oneOf [...], null]
            flat += member.get("oneOf", member.get("anyOf", [member]))
        flat = [m for m in flat if _ref_kept(m, self.defs)]
        plugins = [
            _ref_name(m["$ref"]) for m in flat if _ref_name(m.get("$ref", "")) in self.plugins
        ]
        texts = []
        for kind in ("backend", "middleware"):
            names = [self.link(r) for r in plugins if self.plugins[r][0] == kind]
            if names:
                texts.append(f"{kind} table ({', '.join(names)})")
        texts += [
            self.type_text(m) for m in flat if _ref_name(m.get("$ref", "")) not in self.plugins
        ]
        return " or ".join(texts)


def _type_tag(definition: dict[str, Any]) -> str | None:
    """The ``type`` value that selects a tagged table (a plugin, an object store)."""
    tag = definition.get("properties", {}).get("type", {}).get("const")
    return str(tag) if tag is not None else None


def _is_builtin(definition: dict[str, Any]) -> bool:
    origin = definition.get(CLASS_KEY)
    return origin is None or origin.split(".")[0].split(":")[0] in BUILTIN_PACKAGES


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _ref_kept(member: dict[str, Any], defs: dict[str, Any]) -> bool:
    return "$ref" not in member or _ref_name(member["$ref"]) in defs


def _refs(value: Any) -> list[str]:
    """Every $ref under a schema value, in order."""
    if isinstance(value, dict):
        found = [_ref_name(value["$ref"])] if "$ref" in value else []
        for item in value.values():
            found += _refs(item)
        return found
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def _is_byte_size(members: list[dict[str, Any]]) -> bool:
    return any(m.get("pattern") == BYTE_SIZE_PATTERN for m in members) and all(
        m.get("type") in ("string", "integer", "null") for m in members
    )


def _ordered_properties(definition: dict[str, Any]) -> list[str]:
    """``type`` first, then the model's own field order (the JSON Schema keeps it)."""
    names = list(definition.get("properties", {}))
    return sorted(names, key=lambda name: name != "type")


def _factory_default(cls: type[BaseModel], name: str) -> Any:
    fields = cls.model_fields
    field = fields.get(name) or next(
        (f for f in fields.values() if f.serialization_alias == name), None
    )
    if field is None:
        return None
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _constraints(prop: dict[str, Any]) -> str:
    parts = []
    if "minimum" in prop and "maximum" in prop:
        parts.append(f"{prop['minimum']} to {prop['maximum']}")
    else:
        if "minimum" in prop:
            parts.append(f"≥ {prop['minimum']}")
        if "maximum" in prop:
            parts.append(f"≤ {prop['maximum']}")
    if "exclusiveMinimum" in prop:
        parts.append(f"> {prop['exclusiveMinimum']}")
    if "exclusiveMaximum" in prop:
        parts.append(f"< {prop['exclusiveMaximum']}")
    for low, high, unit in (
        ("minLength", "maxLength", "characters"),
        ("minItems", "maxItems", "items"),
    ):
        if low in prop and high in prop:
            parts.append(f"{prop[low]} to {prop[high]} {unit}")
        elif low in prop:
            parts.append(f"at least {prop[low]} {unit.rstrip('s') if prop[low] == 1 else unit}")
        elif high in prop:
            parts.append(f"at most {prop[high]} {unit}")
    if "pattern" in prop:
        parts.append(f"matching `{prop['pattern']}`")
    return ", ".join(parts)


def _prose(text: str | None) -> str:
    """A docstring or description as one Markdown paragraph (reST ``code`` → `code`)."""
    if not text:
        return ""
    return re.sub(r"\s+", " ", text.replace("``", "`")).strip()


def _cell(text: str) -> str:
    # A bare | would end the cell; escaped ones (\|) stay as they are.
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def toml_value(value: Any) -> str:
    """A JSON value written as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    return json.dumps(value)


def config_reference(models: ConfigModels | None = None) -> str:
    """The Markdown of docs/config-reference.md (built-in plugins unless ``models`` given)."""
    return ReferenceWriter(models or ConfigModels(builtin_registry())).render()
