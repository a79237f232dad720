"""Read an API description — OpenAPI 3.x, Swagger 2 or a plain JSON Schema — and
answer the three questions the adapter asks of it: where is the operation, which
fields does its request body accept, and does a body match it.

Nothing here talks HTTP: documents arrive through a ``fetch(url) -> document``
callable the adapter builds on the shared transport, so external ``$ref``s inside a
fetched document are resolved with the same credentials and the same error
messages. Every walk over a schema is recursion-safe (``$ref`` cycles are cut, depth
is bounded), because real descriptions (Ed-Fi among them) are large and sometimes
self-referential.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

import jsonschema
import referencing
import referencing.jsonschema
from jsonschema import FormatChecker
from referencing import Registry, Resource

from enroll_sync import AdapterError, Code, FieldError, FieldSection, TargetField

__all__ = [
    "ApiDescription", "OperationRef", "LookupRef", "parse_document", "parse_operation",
    "parse_lookup", "load_description",
    "json_path_to_field", "humanize", "PASTED_URI",
]

#: the base URI given to a pasted document (it has no URL of its own)
PASTED_URI = "https://pasted.enroll-sync.invalid/document.json"

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_DEPTH = 12
MAX_FIELDS = 3000
MAX_ERRORS = 25

Fetch = Callable[[str], Any]


# ----------------------------------------------------------------------------- parsing

def parse_document(text: str, where: str) -> Any:
    """Parse a JSON document (or YAML when PyYAML happens to be installed)."""
    if text is None or not str(text).strip():
        raise AdapterError(f"{where} is empty.")
    text = str(text)
    try:
        return json.loads(text)
    except ValueError as exc:
        json_error = exc
    stripped = text.lstrip()
    if stripped.startswith("<"):
        raise AdapterError(f"{where} is HTML, not a JSON document. Check the URL: it should "
                           f"point at the JSON document itself, not a documentation page.")
    try:  # optional: YAML OpenAPI documents, if the deployment has PyYAML
        import yaml  # type: ignore
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            doc = yaml.safe_load(text)
            if isinstance(doc, dict):
                return doc
        except Exception:
            pass
    raise AdapterError(f"{where} is not valid JSON ({json_error.msg}: line "
                       f"{json_error.lineno}, column {json_error.colno}).")


@dataclass(frozen=True)
class OperationRef:
    """A configured operation such as ``POST /data/v3/ed-fi/students``."""

    method: str
    path: str

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def placeholders(self) -> list[str]:
        return re.findall(r"\{([^{}]*)\}", self.path)

    def url_path(self, sis_id: str | None = None) -> str:
        """The path with its single ``{placeholder}`` filled by ``sis_id``."""
        if not self.placeholders:
            return self.path
        return re.sub(r"\{[^{}]*\}", lambda m: quote(str(sis_id or ""), safe=""), self.path, count=1)


def parse_operation(text: Any, label: str, *, allow_placeholder: bool) -> OperationRef | None:
    """``"POST /students"`` -> OperationRef; blank -> None; anything else -> AdapterError."""
    text = str(text or "").strip()
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0].upper() not in HTTP_METHODS or not parts[1].startswith("/"):
        raise AdapterError(f"{label} must look like \"POST /data/v3/ed-fi/students\" "
                           f"(a method, a space, then the path), not {text!r}.")
    op = OperationRef(parts[0].upper(), parts[1])
    if "{" in op.path or "}" in op.path:
        if not allow_placeholder:
            raise AdapterError(f"{label} must not contain a {{placeholder}}: {text!r}.")
        if len(op.placeholders) != 1 or op.path.count("{") != 1:
            raise AdapterError(f"{label} must contain exactly one {{id}} placeholder for the "
                               f"student's id in the SIS: {text!r}.")
    elif allow_placeholder:
        raise AdapterError(f"{label} needs a placeholder for the student's id in the SIS, "
                           f"e.g. \"PUT /students/{{id}}\": {text!r}.")
    return op


@dataclass(frozen=True)
class LookupRef:
    """"Find existing record": ``GET /people?email={contact.email}``.

    Each ``{placeholder}`` is a dotted target key; its value in the record's body
    fills it (URL-encoded), so the SIS is asked for the record that has it.
    """

    method: str
    template: str

    def __str__(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def keys(self) -> list[str]:
        return re.findall(r"\{([^{}]*)\}", self.template)

    def url_path(self, values: dict[str, str]) -> str:
        return re.sub(r"\{([^{}]*)\}", lambda m: quote(str(values[m.group(1)]), safe=""),
                      self.template)


def parse_lookup(text: Any, label: str) -> LookupRef | None:
    """``"GET /people?email={contact.email}"`` -> LookupRef; blank -> None."""
    text = str(text or "").strip()
    if not text:
        return None
    example = "GET /api/v1/people?email={contact.email}"
    parts = text.split()
    if len(parts) != 2 or not parts[1].startswith("/"):
        raise AdapterError(f"{label} must look like \"{example}\" (GET, a space, then the path "
                           f"with a {{field}} placeholder), not {text!r}.")
    if parts[0].upper() != "GET":
        raise AdapterError(f"{label} must be a GET request (it only reads), not {parts[0].upper()}: "
                           f"{text!r}.")
    template = parts[1]
    keys = re.findall(r"\{([^{}]*)\}", template)
    stray = re.sub(r"\{[^{}]*\}", "", template)
    if not keys or "{" in stray or "}" in stray:
        raise AdapterError(f"{label} needs at least one {{field}} placeholder naming the field to "
                           f"match on, e.g. \"{example}\": {text!r}.")
    bad = [k for k in keys if not k or any(not p for p in k.split("."))]
    if bad:
        raise AdapterError(f"{label}: {{{bad[0]}}} is not a field key; use the dotted key of a "
                           f"field, e.g. {{contact.email}}.")
    return LookupRef("GET", template)


# ----------------------------------------------------------------------------- JSON pointers

def _escape(token: str) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


@dataclass(frozen=True)
class Node:
    """A value inside a loaded document, with where it lives (for $ref and validation)."""

    value: Any
    uri: str
    pointer: str = ""

    def child(self, *keys: Any) -> "Node":
        node = self
        for key in keys:
            v = node.value
            if isinstance(v, dict):
                nxt = v.get(key)
            elif isinstance(v, list) and isinstance(key, int) and 0 <= key < len(v):
                nxt = v[key]
            else:
                nxt = None
            node = Node(nxt, node.uri, f"{node.pointer}/{_escape(key)}")
        return node

    @property
    def location(self) -> str:
        return f"{self.uri}#{quote(self.pointer, safe='/~')}"


class Documents:
    """Every document loaded for one description, by URI, with ``$ref`` resolution."""

    def __init__(self, fetch: Fetch | None):
        self._fetch = fetch
        self.docs: dict[str, Any] = {}

    def add(self, uri: str, doc: Any) -> Node:
        self.docs[uri] = doc
        return Node(doc, uri, "")

    def document(self, uri: str) -> Any:
        if uri not in self.docs:
            if uri.startswith(PASTED_URI.rsplit("/", 1)[0]):
                raise AdapterError("A pasted document cannot refer to other files; paste a "
                                   "document whose $refs all start with '#', or give its URL.")
            if self._fetch is None or urlsplit(uri).scheme not in ("http", "https"):
                raise AdapterError(f"Cannot load the referenced document {uri}.")
            self.docs[uri] = self._fetch(uri)
        return self.docs[uri]

    def at(self, uri: str, fragment: str) -> Node:
        doc = self.document(uri)
        fragment = unquote(fragment or "")
        if fragment and not fragment.startswith("/"):
            raise AdapterError(f"Unsupported reference #{fragment} in {uri}: only JSON Pointer "
                               f"references (#/...) are understood.")
        value: Any = doc
        pointer = ""
        for raw in fragment.split("/")[1:] if fragment else []:
            token = _unescape(raw)
            if isinstance(value, dict) and token in value:
                value = value[token]
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                return Node(None, uri, fragment)
            pointer += "/" + _escape(token)
        return Node(value, uri, pointer)

    def deref(self, node: Node, seen: Iterable[str] = ()) -> Node | None:
        """Follow ``$ref`` chains. None when the chain loops back to ``seen``."""
        seen = set(seen)
        hops = 0
        while isinstance(node.value, dict) and isinstance(node.value.get("$ref"), str):
            ref = node.value["$ref"]
            target_uri, fragment = urldefrag(urljoin(node.uri, ref))
            target_uri = target_uri or node.uri
            hops += 1
            if hops > 50:
                return None
            target = self.at(target_uri, fragment)
            if target.value is None:
                raise AdapterError(f"The schema refers to {ref!r}, which does not exist in "
                                   f"{_short_uri(target_uri)}.")
            if target.location in seen:
                return None
            seen.add(target.location)
            siblings = {k: v for k, v in node.value.items() if k != "$ref"}
            if siblings and isinstance(target.value, dict):
                # OpenAPI 3.1 / JSON Schema 2019+: keywords beside $ref apply too;
                # for field listing (description, title) overlaying them is enough.
                target = Node({**target.value, **siblings}, target.uri, target.pointer)
            node = target
        return node


def _short_uri(uri: str) -> str:
    return "the pasted document" if uri.startswith(PASTED_URI.rsplit("/", 1)[0]) else uri


# ----------------------------------------------------------------------------- helpers

def humanize(name: str) -> str:
    """``firstName`` / ``first_name`` -> ``First Name``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-]+", " ", str(name)).split()
    return " ".join(w[:1].upper() + w[1:] for w in words) or str(name)


def _norm_path(path: str) -> str:
    path = re.sub(r"\{[^{}]*\}", "{}", path.split("?", 1)[0])
    return "/" + path.strip("/")


def json_path_to_field(path: Any) -> tuple[int | None, str | None]:
    """``$.addresses[0].city`` -> (None, "addresses.0.city"); ``$[2].firstName`` ->
    (2, "firstName") for a batch body. Plain dotted keys pass through."""
    text = str(path or "").strip()
    if text.startswith("$"):
        text = text[1:]
    index = None
    m = re.match(r"^\.?\[(\d+)\]", text)
    if m:
        index = int(m.group(1))
        text = text[m.end():]
    parts: list[str] = []
    for m in re.finditer(r"\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[(\d+)\]|([^.\[\]]+)", text):
        parts.append(next(g for g in m.groups() if g is not None))
    return index, (".".join(parts) or None)


def _schema_type(s: dict) -> str | None:
    t = s.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if t:
        return t
    if "properties" in s or "additionalProperties" in s:
        return "object"
    if "items" in s:
        return "array"
    values = s.get("enum") or ([s["const"]] if "const" in s else [])
    for v in values:
        if isinstance(v, bool):
            return "boolean"
        if isinstance(v, int):
            return "integer"
        if isinstance(v, float):
            return "number"
        if isinstance(v, str):
            return "string"
    return None


def _code_label(value: Any) -> str:
    text = str(value)
    if "#" in text:  # Ed-Fi descriptors: uri://ed-fi.org/SexDescriptor#Female
        return text.rsplit("#", 1)[1] or text
    return text


def _resource_name(node: Node | None, op: OperationRef | None) -> str:
    if node is not None and isinstance(node.value, dict):
        title = node.value.get("title")
        if isinstance(title, str) and title.strip():
            return title.strip()
        last = node.pointer.rsplit("/", 1)[-1] if node.pointer else ""
        if last and node.pointer.split("/")[-2:-1] in (["schemas"], ["definitions"], ["$defs"]):
            name = _unescape(last).replace(".", "_").split("_")[-1]
            return humanize(name)
    if op is not None:
        segments = [s for s in op.path.split("/") if s and "{" not in s]
        if segments:
            name = segments[-1]
            if name.endswith("ies"):
                name = name[:-3] + "y"
            elif name.endswith("s") and not name.endswith("ss"):
                name = name[:-1]
            return humanize(name)
    return "Record"


# ----------------------------------------------------------------------------- the description

@dataclass
class ApiDescription:
    """What was learned from the schema source for one connection."""

    kind: str                      # "openapi" | "swagger" | "jsonschema"
    version: str                   # "3.0.3", "2.0", a $schema URI, ...
    source: str                    # the URL, or "pasted document"
    documents: Documents
    create: OperationRef
    update: OperationRef | None
    body_is_array: bool            # the create request body is an array of records
    record: Node                   # the schema of one record (resolved)
    update_record: Node | None
    resource: str
    sections: list[FieldSection] = field(default_factory=list)
    lookup: LookupRef | None = None    # "Find existing record", set by the adapter
    _validators: dict = field(default_factory=dict, repr=False)

    # -- fields
    @property
    def fields(self) -> list[TargetField]:
        return [f for s in self.sections for f in s.fields]

    @property
    def required(self) -> list[str]:
        return [f.key for f in self.fields if f.required]

    def field_types(self) -> dict[str, str]:
        return {f.key: f.type for f in self.fields}

    # -- validation
    def validate(self, body: Any, *, update: bool = False) -> list[FieldError]:
        """Check one record's body against its request schema. [] when it matches."""
        node = self.update_record if (update and self.update_record is not None) else self.record
        try:
            validator = self._validator(node)
            found = sorted(validator.iter_errors(body), key=lambda e: [str(p) for p in e.absolute_path])
        except AdapterError:
            raise
        except Exception as exc:  # an unresolvable $ref, a bad pattern, an unknown type ...
            cause = exc.__cause__ if isinstance(exc.__cause__, AdapterError) else exc
            raise AdapterError(f"The SIS schema cannot be used to check records "
                               f"({type(cause).__name__}: {_clip(str(cause), 200)}).") from None
        errors = []
        for err in found:
            path = [str(p) for p in err.absolute_path]
            if err.validator == "required" and isinstance(err.instance, dict):
                missing = re.match(r"^'([^']*)' is a required property", err.message)
                if missing:
                    path.append(missing.group(1))
            errors.append(FieldError(field=".".join(path) or None, code=f"schema.{err.validator}",
                                     message=_clip(err.message)))
            if len(errors) >= MAX_ERRORS:
                break
        return errors

    def _validator(self, node: Node):
        key = node.location
        if key in self._validators:
            return self._validators[key]
        if self.kind in ("openapi", "swagger"):
            spec = (referencing.jsonschema.DRAFT202012 if self.version.startswith("3.1")
                    else referencing.jsonschema.DRAFT4)
            cls = (jsonschema.Draft202012Validator if self.version.startswith("3.1")
                   else jsonschema.Draft4Validator)
            prepare = _openapi_to_jsonschema if not self.version.startswith("3.1") else _drop_readonly_required
        else:
            root = self.documents.docs.get(node.uri)
            cls = jsonschema.validators.validator_for(root if isinstance(root, dict) else {},
                                                      default=jsonschema.Draft202012Validator)
            spec = referencing.jsonschema.specification_with(
                cls.META_SCHEMA.get("$schema", ""), default=referencing.jsonschema.DRAFT202012)
            prepare = _drop_readonly_required

        def retrieve(uri: str):
            return Resource(contents=prepare(self.documents.document(uri.rstrip("#"))),
                            specification=spec)

        resources = []
        for uri, doc in self.documents.docs.items():
            resource = Resource(contents=prepare(doc), specification=spec)
            resources.append((uri, resource))
            own_id = doc.get("$id") if isinstance(doc, dict) and self.kind == "jsonschema" else None
            if isinstance(own_id, str) and own_id:
                resources.append((urljoin(uri, own_id).rstrip("#"), resource))
        registry = Registry(retrieve=retrieve).with_resources(resources)
        validator = cls({"$ref": node.location}, registry=registry, format_checker=FormatChecker())
        self._validators[key] = validator
        return validator


def _clip(text: str, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _transform(doc: Any, fn) -> Any:
    doc = copy.deepcopy(doc)
    stack = [doc]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            fn(cur)
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)
    return doc


def _readonly_fix(d: dict) -> None:
    # A readOnly property is never sent in a request, so it cannot be required there.
    props = d.get("properties")
    if isinstance(props, dict) and isinstance(d.get("required"), list):
        d["required"] = [r for r in d["required"]
                         if not (isinstance(props.get(r), dict) and props[r].get("readOnly"))]
        if not d["required"]:
            del d["required"]


def _drop_readonly_required(doc: Any) -> Any:
    return _transform(doc, _readonly_fix)


def _openapi_to_jsonschema(doc: Any) -> Any:
    """OpenAPI 3.0 / Swagger 2 schema objects -> JSON Schema draft 4 they mean."""
    def fix(d: dict) -> None:
        _readonly_fix(d)
        if d.get("nullable") is True or d.get("x-nullable") is True:
            t = d.get("type")
            if isinstance(t, str):
                d["type"] = [t, "null"]
            if isinstance(d.get("enum"), list) and None not in d["enum"]:
                d["enum"] = [*d["enum"], None]
    return _transform(doc, fix)


# ----------------------------------------------------------------------------- loading

def load_description(*, kind: str, document: Any, uri: str, fetch: Fetch | None,
                     create: OperationRef, update: OperationRef | None) -> ApiDescription:
    """Build an ApiDescription from a parsed root document.

    ``kind`` is what the admin chose: "openapi" or "jsonschema". When the request body
    is an array, the record schema is its ``items`` (``body_is_array``). Raises
    AdapterError with a message the admin can act on.
    """
    docs = Documents(fetch)
    root = docs.add(uri, document)
    where = _short_uri(uri)
    if not isinstance(document, dict):
        raise AdapterError(f"{where[:1].upper() + where[1:]} is not a JSON object, so it is neither "
                           f"an OpenAPI document nor a JSON Schema.")
    is_openapi = isinstance(document.get("openapi"), str) or str(document.get("swagger", "")) == "2.0"
    if kind == "openapi":
        if not is_openapi:
            hint = (" It looks like a JSON Schema: choose \"JSON Schema\" as the schema source."
                    if ("properties" in document or "$schema" in document) else "")
            raise AdapterError(f"{where[:1].upper() + where[1:]} is not an OpenAPI document "
                               f"(it has no \"openapi\" or \"swagger\" version field).{hint}")
        version = str(document.get("openapi") or document.get("swagger"))
        flavour = "swagger" if version.startswith("2") else "openapi"
        if flavour == "openapi" and not version.startswith("3"):
            raise AdapterError(f"OpenAPI version {version} is not supported (use 3.x or Swagger 2.0).")
        body = _request_body(docs, root, flavour, create, "create operation")
        update_body = (_request_body(docs, root, flavour, update, "update operation")
                       if update is not None else None)
    else:
        if is_openapi:
            raise AdapterError(f"{where[:1].upper() + where[1:]} is an OpenAPI document, not a "
                               f"JSON Schema: choose \"OpenAPI\" as the schema source.")
        flavour = "jsonschema"
        version = str(document.get("$schema") or "JSON Schema")
        body = docs.deref(root)
        update_body = None
    if body is None or not isinstance(body.value, dict):
        raise AdapterError("The request body schema could not be read (it refers to itself).")

    body_is_array = _schema_type(body.value) == "array"
    record = body
    if body_is_array:
        record = docs.deref(body.child("items"))
        if record is None or not isinstance(record.value, dict):
            raise AdapterError(f"The request body of {create} is an array whose items have no schema.")
    if _schema_type(record.value) not in ("object", None):
        raise AdapterError(f"The request body of {create} is not a JSON object "
                           f"(it is {_schema_type(record.value)}), so it has no fields to map.")
    update_record = None
    if update_body is not None:
        update_record = update_body
        if _schema_type(update_body.value) == "array":
            update_record = docs.deref(update_body.child("items"))

    resource = _resource_name(record, create)
    desc = ApiDescription(kind=flavour, version=version, source=where, documents=docs,
                          create=create, update=update, body_is_array=body_is_array,
                          record=record, update_record=update_record, resource=resource)
    desc.sections = extract_sections(docs, record, resource)
    if not desc.fields:
        raise AdapterError(f"The request body schema of {create} lists no fields "
                           f"(no \"properties\").")
    return desc


def _server_paths(doc: dict, flavour: str) -> list[str]:
    out = []
    if flavour == "swagger":
        base = doc.get("basePath")
        if isinstance(base, str) and base.strip("/"):
            out.append("/" + base.strip("/"))
    else:
        for server in doc.get("servers") or []:
            if not isinstance(server, dict) or not isinstance(server.get("url"), str):
                continue
            url = server["url"]
            for name, var in (server.get("variables") or {}).items():
                if isinstance(var, dict) and "default" in var:
                    url = url.replace("{" + name + "}", str(var["default"]))
            path = urlsplit(url).path if "://" in url else url
            if path.strip("/"):
                out.append("/" + path.strip("/"))
    return out


def _find_path_item(docs: Documents, root: Node, flavour: str, op: OperationRef) -> Node | None:
    paths = root.child("paths")
    if not isinstance(paths.value, dict):
        raise AdapterError("The OpenAPI document has no \"paths\".")
    prefixes = ["", *_server_paths(root.value, flavour)]
    target = _norm_path(op.path)
    for fold in (False, True):
        for p in paths.value:
            for pre in prefixes:
                candidate = _norm_path(pre.rstrip("/") + "/" + p.lstrip("/"))
                if candidate == target or (fold and candidate.casefold() == target.casefold()):
                    return docs.deref(paths.child(p))
    return None


def _operations(root: Node) -> list[str]:
    out = []
    for p, item in (root.value.get("paths") or {}).items():
        if isinstance(item, dict):
            for m in ("post", "put", "patch"):
                if isinstance(item.get(m), dict):
                    out.append(f"{m.upper()} {p}")
    return out


def _request_body(docs: Documents, root: Node, flavour: str, op: OperationRef, what: str) -> Node:
    item = _find_path_item(docs, root, flavour, op)
    if item is None or not isinstance(item.value, dict):
        ops = _operations(root)
        last = [s for s in op.path.split("/") if s and "{" not in s][-1:] or [""]
        similar = [o for o in ops if last[0] and last[0].lower() in o.lower()] or ops
        hint = (f" Operations with a request body in the document include: "
                f"{', '.join(similar[:8])}{' …' if len(similar) > 8 else ''}."
                if similar else "")
        raise AdapterError(f"The OpenAPI document has no {op} (the {what}).{hint}")
    operation = item.child(op.method.lower())
    if not isinstance(operation.value, dict):
        have = [m.upper() for m in ("get", "post", "put", "patch", "delete")
                if isinstance(item.value.get(m), dict)]
        raise AdapterError(f"The OpenAPI document has the path {op.path} but no {op.method} "
                           f"operation on it (it has {', '.join(have) or 'none'}); check the {what}.")
    if flavour == "swagger":
        params = []
        for holder in (item.child("parameters"), operation.child("parameters")):
            if isinstance(holder.value, list):
                for i in range(len(holder.value)):
                    p = docs.deref(holder.child(i))
                    if p is not None and isinstance(p.value, dict):
                        params.append(p)
        body_params = [p for p in params if p.value.get("in") == "body"]
        if not body_params:
            raise AdapterError(f"{op} has no body parameter in the Swagger document, so there "
                               f"are no fields to map; check the {what}.")
        schema = docs.deref(body_params[-1].child("schema"))
    else:
        body = docs.deref(operation.child("requestBody"))
        content = body.child("content") if body is not None else None
        if content is None or not isinstance(content.value, dict) or not content.value:
            raise AdapterError(f"{op} has no request body in the OpenAPI document, so there are "
                               f"no fields to map; check the {what}.")
        media = next((m for m in content.value if m.split(";")[0].strip() == "application/json"),
                     None) or next((m for m in content.value if "json" in m.lower()), None)
        if media is None:
            raise AdapterError(f"{op} does not accept JSON (its request body is "
                               f"{', '.join(content.value)}).")
        schema = docs.deref(content.child(media, "schema"))
    if schema is None or not isinstance(schema.value, dict):
        raise AdapterError(f"{op} has a request body without a usable schema.")
    return schema


# ----------------------------------------------------------------------------- fields

def _merged(docs: Documents, node: Node, seen: frozenset) -> tuple[dict, list[str], dict[str, Node]]:
    """A schema with allOf/oneOf/anyOf folded in: (schema, required, properties)."""
    schema = dict(node.value)
    required = list(schema.get("required") or []) if isinstance(schema.get("required"), list) else []
    props: dict[str, Node] = {}
    if isinstance(schema.get("properties"), dict):
        for name in schema["properties"]:
            props[name] = node.child("properties", name)
    for combinator in ("allOf", "oneOf", "anyOf"):
        subs = schema.get(combinator)
        if not isinstance(subs, list):
            continue
        for i in range(len(subs)):
            sub = docs.deref(node.child(combinator, i), seen)
            if sub is None or not isinstance(sub.value, dict):
                continue
            s_schema, s_required, s_props = _merged(docs, sub, seen | {sub.location})
            for name, p in s_props.items():
                props.setdefault(name, p)
            if combinator == "allOf":
                required.extend(r for r in s_required if r not in required)
                for k in ("title", "description", "type"):
                    schema.setdefault(k, s_schema.get(k))
    return schema, required, props


def _single_alternative(docs: Documents, node: Node, seen: frozenset) -> Node:
    """``anyOf: [X, {type: null}]`` (nullable in OpenAPI 3.1) -> X."""
    for combinator in ("anyOf", "oneOf"):
        subs = node.value.get(combinator)
        if isinstance(subs, list) and "properties" not in node.value:
            real = [i for i, s in enumerate(subs) if not (isinstance(s, dict) and s.get("type") == "null")]
            if len(real) == 1:
                sub = docs.deref(node.child(combinator, real[0]), seen)
                if sub is not None and isinstance(sub.value, dict):
                    extra = {k: v for k, v in node.value.items() if k not in (combinator,)}
                    return Node({**sub.value, **extra}, sub.uri, sub.pointer)
    return node


def _codes(schema: dict) -> tuple[Code, ...]:
    seen: set[str] = set()
    out = []
    labels = schema.get("x-enumNames") or schema.get("x-enum-varnames") or schema.get("x-enum-descriptions")
    values = schema.get("enum")
    if isinstance(values, list):
        for i, v in enumerate(values):
            if v is None or str(v) == "" or str(v) in seen:
                continue
            seen.add(str(v))
            label = labels[i] if isinstance(labels, list) and i < len(labels) and labels[i] else _code_label(v)
            out.append(Code(value=str(v), label=str(label)))
    for combinator in ("oneOf", "anyOf"):
        subs = schema.get(combinator)
        if isinstance(subs, list) and subs and all(isinstance(s, dict) and "const" in s for s in subs):
            for s in subs:
                v = s["const"]
                if v is None or str(v) == "" or str(v) in seen:
                    continue
                seen.add(str(v))
                out.append(Code(value=str(v), label=str(s.get("title") or _code_label(v))))
    return tuple(out)


def _target_field(key: str, label: str, schema: dict, required: bool) -> TargetField:
    stype = _schema_type(schema) or "string"
    codes = _codes(schema)
    fmt = schema.get("format") if isinstance(schema.get("format"), str) else None
    if codes:
        ftype = "code"
    elif stype == "string" and fmt == "date":
        ftype = "date"
    elif stype in ("integer", "number", "boolean"):
        ftype = stype
    else:
        ftype = "string"
    help_parts = []
    desc = schema.get("description")
    if isinstance(desc, str) and desc.strip():
        help_parts.append(" ".join(desc.split()))
    if schema.get("x-Ed-Fi-isIdentity") or schema.get("x-natural-key"):
        help_parts.append("Identifies the record in the SIS (natural key).")
    if isinstance(schema.get("pattern"), str):
        help_parts.append(f"Pattern: {schema['pattern']}")
    max_length = schema.get("maxLength")
    if not (isinstance(max_length, int) and not isinstance(max_length, bool) and max_length > 0):
        max_length = None
    title = schema.get("title")
    if isinstance(title, str) and title.strip():
        label = title.strip()
    return TargetField(key=key, label=label, type=ftype, required=required, max_length=max_length,
                       codes=codes, help=" ".join(help_parts), format=fmt)


def extract_sections(docs: Documents, record: Node, resource: str) -> list[FieldSection]:
    """The record schema's fields, grouped: top-level scalars in a section named after
    the resource, each top-level object or array in its own section."""
    root_key = "\0root"  # internal: the section of top-level scalars
    collected: list[tuple[str, TargetField]] = []     # (section key, field)
    section_labels: dict[str, str] = {}

    def label_for(parts: list[str]) -> str:
        names = [humanize(p) for p in parts[1:] if not p.isdigit()] if len(parts) > 1 else [humanize(parts[0])]
        return " › ".join(names) or humanize(parts[0])

    def walk(node: Node, parts: list[str], required: bool, section: str | None,
             seen: frozenset, depth: int) -> None:
        if depth > MAX_DEPTH or len(collected) >= MAX_FIELDS:
            return
        schema, req, props = _merged(docs, node, seen)
        for name, prop in props.items():
            if not isinstance(name, str) or not name or "." in name or name.isdigit():
                continue  # not addressable as a dotted key
            sub = docs.deref(prop, seen)
            if sub is None or not isinstance(sub.value, dict):
                continue  # a $ref cycle: stop here
            sub_seen = seen | {sub.location}
            sub = _single_alternative(docs, sub, sub_seen)
            if sub.value.get("readOnly"):
                continue  # the SIS sets it (ids, etags)
            path = [*parts, name]
            is_req = required and name in req
            stype = _schema_type(sub.value)
            sect = section if section is not None else (name if stype in ("object", "array") else root_key)
            if stype == "object" or (stype is None and any(k in sub.value for k in ("allOf", "oneOf", "anyOf"))
                                     and not _codes(sub.value)):
                if sect != root_key:
                    section_labels.setdefault(sect, humanize(path[0]))
                walk(sub, path, is_req, sect, sub_seen, depth + 1)
            elif stype == "array":
                items = docs.deref(sub.child("items"), sub_seen) if isinstance(sub.value.get("items"), dict) else None
                if items is None or not isinstance(items.value, dict):
                    continue
                items_seen = sub_seen | {items.location}
                items = _single_alternative(docs, items, items_seen)
                min_items = sub.value.get("minItems")
                item_req = is_req and isinstance(min_items, int) and min_items >= 1
                itype = _schema_type(items.value)
                if itype == "object" or (itype is None and "allOf" in items.value):
                    section_labels.setdefault(sect, humanize(path[0]))
                    walk(items, [*path, "0"], item_req, sect, items_seen, depth + 1)
                elif itype in ("string", "integer", "number", "boolean") or _codes(items.value):
                    if section is None:
                        sect = root_key
                    merged = {**items.value}
                    if not merged.get("description") and sub.value.get("description"):
                        merged["description"] = sub.value["description"]
                    f = _target_field(".".join([*path, "0"]), label_for(path) + " (first)",
                                      merged, item_req)
                    collected.append((sect, f))
            else:
                if stype is None and not _codes(sub.value) and not sub.value.get("format"):
                    if not sub.value:
                        continue  # {} accepts anything; nothing sensible to offer
                collected.append((sect, _target_field(".".join(path), label_for(path), sub.value, is_req)))

    if record.value.get("properties") is not None or any(
            k in record.value for k in ("allOf", "oneOf", "anyOf")):
        walk(record, [], True, None, frozenset({record.location}), 0)

    root_key_final = "_root" if "root" in section_labels else "root"
    order: list[str] = []
    by_section: dict[str, list[TargetField]] = {}
    for key, f in collected:
        if key not in by_section:
            by_section[key] = []
            order.append(key)
        by_section[key].append(f)
    sections = []
    if root_key in by_section:
        sections.append(FieldSection(key=root_key_final, label=resource, fields=tuple(by_section[root_key])))
    for key in order:
        if key == root_key:
            continue
        sections.append(FieldSection(key=key, label=section_labels.get(key, humanize(key)),
                                     fields=tuple(by_section[key])))
    return sections
