"""Quantization policies: which weight of which layer gets which `WeightQuantSpec`.

Named presets: `w8`, `w4`, `w2` (symmetric, per output channel), with suffixes
  -pc        per channel (the default)
  -scG       sub-channel: groups of G consecutive inputs (e.g. -sc64); the SIMD kernels take G a
             multiple of 32 (other G run the C reference loops, far slower; convert.py warns)
  -pt        per tensor
  -asym      asymmetric with integer zero points
  -clipl1 / -clipl2   clipping factor searched per group minimising L1 / L2 error
  -f16       scales stored as float16
  -mixed     the first layers (subsampling) and the CTC head stay at 8 bits per channel
  -static    Dense inputs quantized to int8 with calibrated ranges (default: dynamic per row)
  -wo        weight only: Dense inputs stay float (the kernels' float-activation path)
  -convq8    VALID Conv2D inputs quantized to int8 per patch too (dynamic, as Dense rows; the
             default keeps convolutions weight-only, on float activations); a convolution with
             fewer than 32 inputs per patch stays on float inputs (int8 would be slower there)
  -lstmq8    LSTM inputs x_t and states h_{t-1} quantized to int8 per step (dynamic) before the
             input and recurrent products (default: LSTM kernels are weight-only, on float
             activations; the int8 path is about 4x faster at one row)
e.g. `w2-sc64-asym-clipl2-f16-mixed`. `fp32` quantizes nothing.

A policy is a small serialisable object: a default spec plus ordered rules (first match wins)
mapping layer-name patterns (fnmatch) to a spec or to None (keep float). It is printed in
every report.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace

from .numerics import WeightQuantSpec

# Layers a `-mixed` preset keeps at 8 bits: the input convolutions see raw features and the CTC
# head's errors go straight to the output; both are a small share of the weights.
SENSITIVE_PATTERNS = ("subsample_*", "ctc_head")
_SUFFIX = re.compile(r"^(pc|pt|sc(\d+)|asym|clipl1|clipl2|f16|mixed|static|wo|convq8|lstmq8)$")
ACTIVATIONS = ("dynamic", "static", "none")
# Inputs of other layer types than Dense: float unless their suffix asks for int8 per row.
INPUT_MODES = ("none", "dynamic")
INPUT_MODE_SUFFIXES = {"conv_activations": "convq8", "lstm_activations": "lstmq8"}  # field -> suffix
_SUFFIX_INPUT_MODE = {suffix: f for f, suffix in INPUT_MODE_SUFFIXES.items()}


@dataclass(frozen=True)
class Rule:
    pattern: str
    spec: WeightQuantSpec | None  # None: keep this layer float

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "spec": None if self.spec is None else self.spec.to_dict()}


@dataclass(frozen=True)
class Policy:
    name: str
    default: WeightQuantSpec | None
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    activations: str = "dynamic"   # int8 inputs of quantized Dense layers: dynamic | static | none
    conv_activations: str = "none"  # inputs of quantized VALID Conv2D layers: none | dynamic (per patch)
    lstm_activations: str = "none"  # x_t and h_{t-1} of quantized LSTMs: none | dynamic (per step)

    def __post_init__(self):
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"policy {self.name!r}: activations={self.activations!r}, expected one of {ACTIVATIONS}")
        for field_name in INPUT_MODE_SUFFIXES:
            if getattr(self, field_name) not in INPUT_MODES:
                raise ValueError(f"policy {self.name!r}: {field_name}={getattr(self, field_name)!r}, expected one "
                                 f"of {INPUT_MODES}")

    def spec_for(self, layer_name: str, role: str | None = None) -> WeightQuantSpec | None:
        """Spec of one weight: rules match the layer name or "layer/role" (e.g. "lstm0/recurrent_kernel",
        so an LSTM's input and recurrent kernels can differ)."""
        names = [layer_name] + ([f"{layer_name}/{role}"] if role else [])
        for rule in self.rules:
            if any(fnmatch.fnmatchcase(n, rule.pattern) for n in names):
                return rule.spec
        return self.default

    def with_override(self, pattern: str, spec: WeightQuantSpec | str | None) -> "Policy":
        """A copy where layers matching `pattern` get `spec` (a spec, a preset name, or None for float);
        overrides added later win over earlier ones and over the preset's own rules."""
        if isinstance(spec, str):
            spec = from_name(spec).default
        return replace(self, name=f"{self.name}+{pattern}={'float' if spec is None else _short(spec)}",
                       rules=(Rule(pattern, spec),) + self.rules)

    def to_dict(self) -> dict:
        return {"name": self.name, "default": None if self.default is None else self.default.to_dict(),
                "rules": [r.to_dict() for r in self.rules], "activations": self.activations,
                **{f: getattr(self, f) for f in INPUT_MODE_SUFFIXES if getattr(self, f) != "none"}}

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        """The policy of `to_dict`'s output (a JSON policy file); ValueError naming a missing
        name, an unknown key or a malformed rule."""
        known = {"name", "default", "rules", "activations", *INPUT_MODE_SUFFIXES}
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ValueError("a policy dict needs a \"name\" string (see Policy.to_dict)")
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"policy {d['name']!r}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        rules = d.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, dict) and set(r) == {"pattern", "spec"}
                                                  for r in rules):
            raise ValueError(f"policy {d['name']!r}: rules must be a list of {{\"pattern\", \"spec\"}} objects")

        def spec(s):
            if s is None:
                return None
            if not isinstance(s, dict):
                raise ValueError(f"policy {d['name']!r}: a spec must be an object or null, got {s!r}")
            try:
                return WeightQuantSpec.from_dict(s)
            except TypeError as err:  # a missing field
                raise ValueError(f"policy {d['name']!r}: {err}") from None
        return cls(name=d["name"], default=spec(d.get("default")),
                   rules=tuple(Rule(r["pattern"], spec(r["spec"])) for r in rules),
                   activations=d.get("activations", "dynamic"),
                   **{f: d.get(f, "none") for f in INPUT_MODE_SUFFIXES})

    def with_input_mode(self, field_name: str, mode: str) -> "Policy":
        """A copy with `field_name` (a key of INPUT_MODE_SUFFIXES) set to `mode`, its suffix in
        the name when the mode is "dynamic" and not otherwise."""
        suffix = f"-{INPUT_MODE_SUFFIXES[field_name]}"
        return replace(self, **{field_name: mode},
                       name=self.name.replace(suffix, "") + (suffix if mode == "dynamic" else ""))

    def describe(self) -> str:
        lines = [f"policy {self.name}: default {_short(self.default) if self.default else 'float'}, "
                 f"activations {self.activations}"
                 + (f", convolutions {self.conv_activations}" if self.conv_activations != "none" else "")
                 + (f", LSTMs {self.lstm_activations}" if self.lstm_activations != "none" else "")]
        lines += [f"  {r.pattern}: {_short(r.spec) if r.spec else 'float'}" for r in self.rules]
        return "\n".join(lines)


def _short(spec: WeightQuantSpec) -> str:
    gran = {"tensor": "pt", "channel": "pc"}.get(spec.granularity) or f"sc{spec.group_size}"
    parts = [f"w{spec.bits}", gran]
    if not spec.symmetric:
        parts.append("asym")
    if spec.clip in ("l1", "l2"):
        parts.append(f"clip{spec.clip}")
    elif spec.clip == "percentile":
        parts.append(f"p{spec.percentile:g}")
    if spec.scale_dtype == "float16":
        parts.append("f16")
    return "-".join(parts)


def from_name(name: str) -> Policy:
    """Parse a preset name such as `w4`, `w2-sc64-asym`, `w4-mixed` (see the module docstring)."""
    if name == "fp32":
        return Policy("fp32", None)
    head, *suffixes = name.split("-")
    m = re.fullmatch(r"w(\d+)", head)
    if not m:
        raise ValueError(f"policy {name!r}: expected w8, w4 or w2 followed by -suffixes (or fp32)")
    kw: dict = {"bits": int(m.group(1))}
    mixed = False
    activations, input_modes = "dynamic", {}
    seen: dict[str, str] = {}  # what each suffix sets -> the suffix that set it
    for s in suffixes:
        sm = _SUFFIX.match(s)
        if not sm:
            raise ValueError(f"policy {name!r}: unknown suffix -{s} "
                             "(known: -pc -pt -scG -asym -clipl1 -clipl2 -f16 -mixed -static -wo -convq8 -lstmq8)")
        # -sc64-sc32 or -static-wo would otherwise let the last one win without a word
        slot = ("granularity" if s in ("pt", "pc") or sm.group(2) else "clipping" if s.startswith("clip")
                else "activations" if s in ("static", "wo") else s)
        if slot in seen:
            raise ValueError(f"policy {name!r}: " + (f"-{s} given twice" if seen[slot] == s else
                                                    f"-{seen[slot]} and -{s} both set the {slot}; give one"))
        seen[slot] = s
        if s == "pt":
            kw["granularity"] = "tensor"
        elif s == "pc":
            kw["granularity"] = "channel"
        elif sm.group(2):
            kw.update(granularity="group", group_size=int(sm.group(2)))
        elif s == "asym":
            kw["symmetric"] = False
        elif s.startswith("clip"):
            kw["clip"] = s[4:]
        elif s == "f16":
            kw["scale_dtype"] = "float16"
        elif s == "mixed":
            mixed = True
        elif s == "static":
            activations = "static"
        elif s == "wo":
            activations = "none"
        elif s in _SUFFIX_INPUT_MODE:
            input_modes[_SUFFIX_INPUT_MODE[s]] = "dynamic"
    try:
        default = WeightQuantSpec(**kw)
    except ValueError as err:
        raise ValueError(f"policy {name!r}: {err}") from None
    rules = ()
    if mixed:
        eight = WeightQuantSpec(bits=8, scale_dtype=default.scale_dtype)
        rules = tuple(Rule(p, eight) for p in SENSITIVE_PATTERNS)
    return Policy(name, default, rules, activations, **input_modes)
