"""The settings schema: what each user-facing RunConfig field carries beside it, and a walk over them.

A field is a user setting when its dataclass field has `metadata=setting(...)` (core.base.config). `walk(RunConfig)`
returns one `Setting` per such field, by its short name, in declaration order; the command line, the setup page's
state mapping and the sweep axes are derived from that table (core.base.choices, core.cli, ui.setup_form,
core.train.experiments), so a new setting is declared once, beside its field.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KEY = "setting"  # the dataclass metadata key that marks a user setting
BOOL_FLAGS = ("", "negate", "set", "both")  # --no-X sets False; --X sets True; --X / --no-X
# widget value conversions: a fraction shown as a whole percentage; a number typed as text, blank = None
FORMS = ("", "pct", "number_text")
WIDGETS = ("", "number", "slider", "select", "radio", "toggle", "checkbox", "text")


class ConfigError(ValueError):
    """A configuration value that cannot work, with a message for the user (valid choices listed)."""


@dataclass(frozen=True)
class Meta:
    """What a setting declares beside its field (see `setting`)."""

    # short name: the choices key, the sweep axis and (by default) "su_<name>" on the setup page
    name: str = ""
    flag: str = ""  # command-line option ("" = none)
    bool_flag: str = ""  # for bool fields: "negate" (--no-X -> False), "set" (--X -> True), "both"
    help: str = ""  # help text; "{default}" is replaced by the field's real default
    choices: tuple[str, ...] = ()  # allowed values
    metavar: str | None = None
    group: str = ""  # command-line option group
    range: tuple[float, float] | None = None  # allowed values, checked by `Setting.check`
    label: str = ""  # widget label on the setup page
    widget: str = ""  # widget kind ("" = no widget)
    lo: float | None = None  # widget bounds and step, in the widget's units (default: `range`)
    hi: float | None = None
    step: float | None = None
    state: str = ""  # widget key (default "su_<name>")
    form: str = ""  # widget value conversion (FORMS)
    section: str = ""  # setup-page section that draws it without a layout of its own
    sweep: str = ""  # help of the sweep axis ("" = not sweepable)
    aliases: tuple[str, ...] = ()  # other names of the sweep axis
    cpu: Any = None  # device-dependent default on a CPU / a GPU (None: the field's default everywhere)
    gpu: Any = None
    also: tuple[str, ...] = ()  # dotted paths a choice of this setting also sets (the seed: the split's too)


def setting(**kw: Any) -> dict[str, Meta]:
    """Field metadata that makes a dataclass field a user setting: `field(default=..., metadata=setting(...))`."""
    meta = Meta(**kw)
    if meta.bool_flag not in BOOL_FLAGS or meta.form not in FORMS or meta.widget not in WIDGETS:
        raise TypeError(f"bad setting metadata: {meta}")
    return {KEY: meta}


@dataclass(frozen=True)
class Setting:
    """One user setting: its dotted path in the config, value type, default and metadata."""

    name: str
    path: str  # "data.aug.rotate"
    kind: type  # int, float, str or bool (an Optional's inner type)
    optional: bool  # None is a value (the learning rate: None = the schedule's default)
    default: Any
    meta: Meta

    @property
    def state_key(self) -> str:
        """The setup page's widget key."""
        return self.meta.state or f"su_{self.name}"

    def options(self) -> tuple[str, ...]:
        """The allowed values of a setting with choices."""
        return self.meta.choices

    def default_text(self) -> str:
        """The default as a help text says it ('10', 'on', '128 on a CPU, 224 on a GPU')."""
        if self.meta.cpu is not None:
            return f"{self.meta.cpu} on a CPU, {self.meta.gpu} on a GPU"
        if self.kind is bool:
            return "on" if self.default else "off"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def help_text(self) -> str:
        """The help with the real default filled in."""
        text = self.meta.help.replace("{default}", self.default_text())
        return text.replace("{choices}", ", ".join(self.options())) if "{choices}" in text else text

    def check(self, value: Any) -> Any:
        """The value when it is one of the choices and within the range; ConfigError naming the valid ones."""
        if value is None and self.optional:
            return value
        if self.meta.choices and value not in self.options():
            raise ConfigError(f"{self.name} must be one of {', '.join(self.options())}; got {value!r}")
        lo_hi = self.meta.range
        if lo_hi is not None and not lo_hi[0] <= value <= lo_hi[1]:
            raise ConfigError(f"{self.name} must be within {lo_hi[0]:g}..{lo_hi[1]:g}, got {value!r}")
        return value


@functools.cache
def walk(cls: type, prefix: str = "") -> dict[str, Setting]:
    """Every user setting of a (nested) dataclass by short name, in declaration order."""
    found: dict[str, Setting] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path, tp = f"{prefix}{f.name}", hints[f.name]
        inner, optional = _unwrap(tp)
        if isinstance(inner, type) and dataclasses.is_dataclass(inner) and not optional:
            found.update(walk(inner, path + "."))
        elif KEY in f.metadata:
            meta: Meta = f.metadata[KEY]
            default = f.default if f.default is not dataclasses.MISSING else None
            s = Setting(meta.name or f.name, path, inner, optional, default, meta)
            if s.name in found:
                raise TypeError(f"two settings are named {s.name!r}")
            found[s.name] = s
    return found


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type inside an Optional, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def get(cfg: Any, path: str) -> Any:
    """The value at a dotted path."""
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def put(cfg: Any, path: str, value: Any) -> None:
    """Set the value at a dotted path."""
    *parents, last = path.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, last, value)


def differences(old: Any, new: Any, settings: Iterable[Setting]) -> list[str]:
    """'label: old -> new' for each setting whose value differs between two configs, in declaration order."""
    return [
        f"{s.meta.label or s.name}: {_shown(get(old, s.path))} → {_shown(get(new, s.path))}"
        for s in settings
        if get(old, s.path) != get(new, s.path)
    ]


def _shown(value: Any) -> str:
    """A setting's value in a sentence."""
    if value is None or value == "":
        return "default" if value is None else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def cast(s: Setting, value: Any) -> Any:
    """A widget's value as the setting's type (text stripped; None stays None)."""
    return None if value is None else s.kind(value.strip() if isinstance(value, str) else value)


# ---------------------------------------------------------------- derived: command-line options


def add_options(
    parser: argparse.ArgumentParser,
    settings: Iterable[Setting],
    groups: Sequence[str],
    helps: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One option (default None: not given) per setting with a flag, in its group; returns the groups by name."""
    made: dict[str, Any] = {g: parser.add_argument_group(g) for g in groups}
    for s in settings:
        if s.meta.flag:
            kw: dict[str, Any] = {
                "dest": s.name,
                "default": None,
                "help": (helps or {}).get(s.name, s.help_text()),
            }
            if s.kind is bool:
                kw["action"] = argparse.BooleanOptionalAction if s.meta.bool_flag == "both" else "store_true"
            else:
                kw["type"] = s.kind
            if s.meta.choices:
                kw["choices"] = list(s.options())
            if s.meta.metavar or not (s.meta.choices or s.kind is bool):  # --bs BS, as the flag reads
                kw["metavar"] = s.meta.metavar or s.meta.flag.lstrip("-").replace("-", "_").upper()
            made.get(s.meta.group, parser).add_argument(s.meta.flag, **kw)
    return made


def given(ns: argparse.Namespace, settings: Iterable[Setting]) -> dict[str, Any]:
    """The settings given on a command line, by name (a --no-X switch gives False)."""
    out: dict[str, Any] = {}
    for s in settings:
        value = getattr(ns, s.name, None) if s.meta.flag else None
        if value is not None:
            out[s.name] = False if s.meta.bool_flag == "negate" else value
    return out


# ---------------------------------------------------------------- derived: the setup form's widget values


def to_state(cfg: Any, settings: Iterable[Setting]) -> dict[str, Any]:
    """Widget values (by state key) that show `cfg`, one per setting with a widget; an unknown choice is refused."""
    return {s.state_key: _to_widget(s, s.check(get(cfg, s.path))) for s in settings if s.meta.widget}


def from_state(state: Mapping[str, Any], settings: Iterable[Setting]) -> dict[str, Any]:
    """The choices the widgets show, by setting name (a widget missing from `state` keeps the base's value)."""
    return {
        s.name: _from_widget(s, state[s.state_key])
        for s in settings
        if s.meta.widget and s.state_key in state
    }


def _to_widget(s: Setting, value: Any) -> Any:
    """A config value as its widget holds it."""
    if s.meta.form == "pct":
        return int(round(float(value) * 100))
    if s.meta.form == "number_text":
        return "" if value is None else f"{value:.3g}"
    return s.kind(value)


def _from_widget(s: Setting, value: Any) -> Any:
    """A widget's value as the config holds it."""
    if s.meta.form == "pct":
        return value / 100
    if s.meta.form == "number_text":
        text = str(value or "").strip()
        try:
            return float(text) if text else None
        except ValueError:
            what = s.meta.label.split(" (")[0].lower()
            raise ConfigError(f"{what} must be a number such as 0.001 or 1e-3, got {text!r}") from None
    return cast(s, value)


def check_declared(obj: Any) -> None:
    """Refuse a value of a section's own settings outside their declared choices or range (nested ones check theirs)."""
    cls: type = obj.__class__
    for s in walk(cls).values():
        if "." not in s.path and (s.meta.choices or s.meta.range is not None):
            s.check(getattr(obj, s.path))
