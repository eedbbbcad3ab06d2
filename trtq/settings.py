"""Settings declared once: each stage's request is one pydantic model, and the CLI is read from it.

A stage's request (`PlanRequest`, `SensitivityRequest`, `CalibrationSettings` ...) declares each
setting once, as a field: its default, its help text (the field's description), its range (`ge`,
`le`, `gt` on the field, or a validator for what a range cannot say) and, where the command-line
flag is not the field's name with dashes, the flag (`setting(..., flag="--mip-gap")`).
`add_options` turns those fields into `add_argument` calls, so a default or a help text is never
written twice; `from_args` builds the request from the parsed namespace; the library API takes the
same model. A bad value is one `InputError` line (exit 2 on the command line), never a traceback.

Only pydantic and the standard library are imported here: `trtq --help` reads these models.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, cast

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from trtq.errors import InputError
from trtq.options import number

R = TypeVar("R", bound="Request")


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    **constraints: Any,
) -> Any:
    """A request field: `help` is the CLI help and the field's description; `constraints` are pydantic's
    (`ge`, `le`, `gt` ...), which also become the CLI option's range check. `parse` replaces the option's
    argparse `type` (a number field's is `trtq.options.number` with the field's bounds: finite, in range)."""
    extra = {key: value for key, value in (("flag", flag), ("metavar", metavar), ("parse", parse)) if value is not None}
    return Field(default, description=help, json_schema_extra=cast(Any, extra or None), **constraints)


def flag_of(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("flag") or "--" + name.replace("_", "-"))


def _one_line(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first problem of a validation error as one line naming the option."""
    error = exc.errors(include_url=False)[0]
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error" and "error" in ctx:
        return str(ctx["error"])
    name = str(error["loc"][0]) if error["loc"] else ""
    field = model.model_fields.get(name)
    if field is None:
        return (
            f"{model.__name__}: unknown setting {name!r}"
            if error["type"] == "extra_forbidden"
            else f"{model.__name__}: {error['msg']}"
        )
    return f"{flag_of(name, field)}: {error['msg'].lower()}, got {error.get('input')!r}"


class Request(BaseModel):
    """A stage's settings: keyword fields only, unknown names refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InputError(_one_line(exc, type(self))) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise InputError(_one_line(exc, type(self))) from None

    @classmethod
    def from_args(cls: type[R], args: argparse.Namespace, **overrides: Any) -> R:
        """The request from parsed command-line options: every field the namespace has, then `overrides`."""
        values = {name: getattr(args, name) for name in cls.model_fields if hasattr(args, name)}
        return cls(**{**values, **overrides})

    def check(self: R) -> R:
        """Validate again (every field was checked when set; kept for callers that check before work)."""
        return type(self)(**{name: getattr(self, name) for name in type(self).model_fields})


def _bare_type(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _bounds(field: FieldInfo) -> dict[str, float]:
    out: dict[str, float] = {}
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            out["minimum"] = float(meta.ge)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Le):
            out["maximum"] = float(meta.le)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Gt):
            out["above"] = float(meta.gt)  # type: ignore[arg-type]
    return out


def add_options(
    parser: argparse._ActionsContainer, model: type[Request], *names: str, **argparse_overrides: dict[str, Any]
) -> None:
    """One `add_argument` per field of `model` (all of them, or `names`), default and help read from the field.

    An int or float option is checked when parsed (finite, within the field's `ge`/`le`/`gt`: one line, exit 2)
    unless the field names its own `parse`; the model's validators then check the value again. `argparse_overrides[name]` adds or replaces
    keywords of one option (`required=True`, `type=` for a list given as text ...).
    """
    for name in names or tuple(model.model_fields):
        field = model.model_fields[name]
        kind = _bare_type(field.annotation)
        kwargs: dict[str, Any] = {"dest": name, "help": field.description or ""}
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if field.is_required():
            kwargs["required"] = True
        if kind is bool:
            kwargs.update(action="store_false" if default else "store_true", default=default)
        else:
            kwargs["default"] = default
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get("metavar"):
                kwargs["metavar"] = extra["metavar"]
            if typing.get_origin(kind) is Literal:
                kwargs["choices"] = typing.get_args(kind)
            elif typing.get_origin(kind) is list:
                kwargs["action"] = "append"
            elif extra.get("parse"):
                kwargs["type"] = extra["parse"]
            elif kind in (int, float):
                kwargs["type"] = number(integer=kind is int, **_bounds(field))
            if default is not None and default != [] and "(default" not in kwargs["help"]:
                kwargs["help"] = (
                    f"{kwargs['help']} (default: {default:g})"
                    if isinstance(default, float)
                    else f"{kwargs['help']} (default: {default})"
                )
        kwargs.update(argparse_overrides.get(name, {}))
        parser.add_argument(flag_of(name, field), **kwargs)


def checked_workload(workload: str | None) -> str | None:
    """A `workload` field's check, shared by every request that takes one (plan, predict, report): the spec or
    file parses (trtq.predict.step.parse_workload), before any other work."""
    if workload:
        from trtq.predict.step import parse_workload

        parse_workload(workload)
    return workload
