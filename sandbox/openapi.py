"""Check requests and responses against GitHub's OpenAPI description; report one-line violations."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources.abc import Traversable
from typing import Any

from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource, Specification

DOCUMENT_URI = "urn:github:openapi-subset"
NO_BODY: Any = object()
_METHODS = ("get", "post", "put", "patch", "delete")
_MAX_ERRORS = 3


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _strip_discriminators(node: Any) -> Any:
    # GitHub's description uses ``discriminator`` where it does not hold: check-runs POST
    # maps nothing and puts inline schemas under oneOf; repos/get-content maps "array" to a
    # schema of type array. openapi-schema-validator resolves discriminators strictly, so a
    # valid body fails there. OAS 3.1 treats discriminator as an annotation; so do we, and
    # oneOf/anyOf are then checked as plain JSON Schema.
    if isinstance(node, dict):
        return {k: _strip_discriminators(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_strip_discriminators(v) for v in node]
    return node


def _allow_null_in_nullable_enums(node: Any) -> Any:
    # GitHub marks fields like ``state_reason`` and check-run ``conclusion`` as
    # ``nullable: true`` with an ``enum`` lacking null, and sends null for them. OAS 3.0.3 leaves
    # open whether such an enum admits null; openapi-schema-validator says no. GitHub's intent
    # (and its responses) say yes, so null joins every nullable enum.
    if isinstance(node, dict):
        fixed = {k: _allow_null_in_nullable_enums(v) for k, v in node.items()}
        enum = fixed.get("enum")
        if fixed.get("nullable") is True and isinstance(enum, list) and None not in enum:
            fixed["enum"] = [*enum, None]
        return fixed
    if isinstance(node, list):
        return [_allow_null_in_nullable_enums(v) for v in node]
    return node


def _fix_account_alternatives(node: Any) -> Any:
    # Erratum: GET /app/installations inlines ``installation.account`` as ``allOf`` [Simple User,
    # Enterprise], which no account satisfies (the operation's own example is a plain user).
    # The component schema ``installation`` says ``anyOf`` of the same two; use that meaning.
    if isinstance(node, dict):
        fixed = {k: _fix_account_alternatives(v) for k, v in node.items()}
        members = fixed.get("allOf")
        titles = {m.get("title") for m in members} if isinstance(members, list) else set()
        if {"Simple User", "Enterprise"} <= titles:
            fixed["anyOf"] = fixed.pop("allOf")
        return fixed
    if isinstance(node, list):
        return [_fix_account_alternatives(v) for v in node]
    return node


@dataclass(frozen=True)
class Parameter:
    """One path or query parameter of an operation."""

    name: str
    location: str
    required: bool
    pointer: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    """One documented operation: method, path template and where its schemas live."""

    method: str
    template: str
    operation_id: str
    pointer: str
    pattern: re.Pattern[str]
    literal_chars: int
    parameters: tuple[Parameter, ...]
    request_body: Mapping[str, Any] | None
    responses: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Match:
    """An operation matched by a concrete request path, with its path parameters."""

    operation: Operation
    path_params: Mapping[str, str] = field(default_factory=dict)


def _template_pattern(template: str, multi_segment: set[str]) -> re.Pattern[str]:
    out = ""
    for literal, name in re.findall(r"([^{]*)(?:\{([^}]+)\})?", template):
        out += re.escape(literal)
        if name:
            body = ".+" if name in multi_segment else "[^/]+"
            out += f"(?P<{name}>{body})"
    return re.compile(out + "/?")


class OpenApiValidator:
    """Matches requests to operations of an OpenAPI 3.0 document and validates them."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        """Index the operations of ``document``."""
        # Each pass builds new containers, so ``document`` itself is never changed.
        fixed = _fix_account_alternatives(_strip_discriminators(dict(document)))
        self.document = _allow_null_in_nullable_enums(fixed)
        resource: Resource[Any] = Specification.OPAQUE.create_resource(self.document)
        self._registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self._validators: dict[str, Any] = {}
        self.operations = tuple(self._operations())

    @classmethod
    def from_file(cls, source: Traversable) -> OpenApiValidator:
        """Load the description from a JSON file (a ``Path`` or a package resource)."""
        return cls(json.loads(source.read_text(encoding="utf-8")))

    @cached_property
    def operation_ids(self) -> frozenset[str]:
        """``METHOD /template`` of every operation in the document."""
        return frozenset(f"{op.method} {op.template}" for op in self.operations)

    def _resolve(self, node: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node, None
        target: Any = self.document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target, ref.removeprefix("#")

    def _operations(self) -> Iterator[Operation]:
        for template, item in self.document["paths"].items():
            for method in _METHODS:
                if method not in item:
                    continue
                op = item[method]
                pointer = f"/paths/{_escape(template)}/{method}"
                params = []
                multi: set[str] = set()
                for index, raw in enumerate(op.get("parameters", [])):
                    resolved, ref = self._resolve(raw)
                    where = ref or f"{pointer}/parameters/{index}"
                    params.append(
                        Parameter(
                            resolved["name"],
                            resolved["in"],
                            bool(resolved.get("required")),
                            f"{where}/schema",
                            resolved.get("schema", {}),
                        )
                    )
                    if resolved.get("x-multi-segment"):
                        multi.add(resolved["name"])
                responses = {}
                for status, raw in op.get("responses", {}).items():
                    resolved, ref = self._resolve(raw)
                    responses[status] = {
                        "pointer": ref or f"{pointer}/responses/{status}",
                        "content": resolved.get("content", {}),
                    }
                body = op.get("requestBody")
                yield Operation(
                    method=method.upper(),
                    template=template,
                    operation_id=op.get("operationId", ""),
                    pointer=pointer,
                    pattern=_template_pattern(template, multi),
                    literal_chars=len(re.sub(r"\{[^}]+\}", "", template)),
                    parameters=tuple(params),
                    request_body=body,
                    responses=responses,
                )

    def match(self, method: str, path: str) -> Match | None:
        """The most specific operation for ``method path`` (most literal characters), or None."""
        best: Match | None = None
        for op in self.operations:
            if op.method != method.upper():
                continue
            found = op.pattern.fullmatch(path)
            if found is None:
                continue
            if best is None or op.literal_chars > best.operation.literal_chars:
                best = Match(op, {k: v for k, v in found.groupdict().items() if v is not None})
        return best

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = OAS30Validator(
                {"$ref": f"{DOCUMENT_URI}#{pointer}"},
                registry=self._registry,
                format_checker=oas30_format_checker,
            )
            self._validators[pointer] = validator
        errors: list[ValidationError] = sorted(
            validator.iter_errors(instance), key=lambda e: list(e.absolute_path)
        )
        return [_describe(error) for error in errors[:_MAX_ERRORS]]

    def check_request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Any = NO_BODY,
    ) -> list[str]:
        """Violations of one request: unknown operation, bad parameters, bad JSON body."""
        prefix = f"{method.upper()} {path}"
        match = self.match(method, path)
        if match is None:
            return [f"{prefix}: operation: not in the OpenAPI description"]
        op = match.operation
        out: list[str] = []
        declared = {p.name for p in op.parameters if p.location == "query"}
        for name in query:
            if name not in declared:
                out.append(
                    f"{prefix}: query parameter {name!r}: not documented for {op.operation_id}"
                )
        for param in op.parameters:
            if param.location == "path":
                raw: str | None = match.path_params.get(param.name)
            elif param.location == "query":
                raw = query.get(param.name)
            else:
                continue
            where = f"{param.location} parameter {param.name!r}"
            if raw is None:
                if param.required:
                    out.append(f"{prefix}: {where}: required but missing")
                continue
            for message in self._errors(param.pointer, _coerce(raw, param.schema)):
                out.append(f"{prefix}: {where}: {message}")
        out += self._check_request_body(prefix, op, body)
        return out

    def _check_request_body(self, prefix: str, op: Operation, body: Any) -> list[str]:
        if op.request_body is None:
            if body is not NO_BODY:
                return [f"{prefix}: request body: {op.operation_id} takes no body"]
            return []
        if body is NO_BODY:
            if op.request_body.get("required"):
                return [f"{prefix}: request body: required but missing"]
            return []
        if "application/json" not in op.request_body.get("content", {}):
            return []
        pointer = f"{op.pointer}/requestBody/content/application~1json/schema"
        return [f"{prefix}: request body: {m}" for m in self._errors(pointer, body)]

    def check_response(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = NO_BODY,
    ) -> list[str]:
        """Violations of one JSON response: undocumented success status, or a body off-schema.

        GitHub documents few error statuses per operation, so an undocumented 4xx/5xx body
        is only held to ``basic-error``.
        """
        match = self.match(method, path)
        if match is None:
            return []
        if status == 304 and body is NO_BODY:
            # Any GET may answer a conditional request with 304, documented or not:
            # https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
            return []
        op = match.operation
        prefix = f"{method.upper()} {path}"
        spec = op.responses.get(str(status)) or op.responses.get("default")
        if spec is None:
            if status < 400:
                return [f"{prefix}: response {status}: status not documented for {op.operation_id}"]
            if body is NO_BODY:
                return []
            pointer = "/components/schemas/basic-error"
            return [f"{prefix}: response {status} body: {m}" for m in self._errors(pointer, body)]
        content = spec["content"]
        if not content or status == 304:
            if body is not NO_BODY and status != 304:
                return [f"{prefix}: response {status}: documented without a body"]
            return []
        if body is NO_BODY:
            return [f"{prefix}: response {status}: body missing"]
        if "application/json" not in content:
            return []
        pointer = f"{spec['pointer']}/content/application~1json/schema"
        return [f"{prefix}: response {status} body: {m}" for m in self._errors(pointer, body)]


def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if kind == "boolean" and raw in {"true", "false"}:
        return raw == "true"
    return raw


def _describe(error: ValidationError) -> str:
    location = "/" + "/".join(str(p) for p in error.absolute_path)
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"at {location}: {message}"
