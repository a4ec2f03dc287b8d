"""An explainable risk score: logistic regression over the named customer features.

``score`` standardizes each feature of ``vector`` with the model's mean and scale, clips it
to +-``clip`` standard units, and weighs it::

    contribution_i = weight_i * clip((x_i - mean_i) / scale_i)
    value = sigmoid(intercept + sum_i contribution_i)

so the intercept plus all contributions is exactly the logit of ``value``: the reasons are
the largest positive terms of that sum, in logit units. The clip bounds the logit by
``|intercept| + clip * sum |weight|``, which a model file must keep within ``MAX_LOGIT``;
beyond about 15 logits ``value`` rounds so close to 0 or 1 that its logit no longer matches
the sum (and one outlying count should not decide a score on its own anyway).

Models are JSON files in ``paywatch/risk/models/<version>.json``, checked on load.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path

import msgspec

from paywatch.risk.features import FEATURE_NAMES, CustomerFeatures, vector
from paywatch.schemas.models import RiskBand

DEFAULT_VERSION = "risk-v1"
MAX_LOGIT = 15.0
TOP_REASONS = 3
_VERSION = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
_RAISED = (RiskBand.MEDIUM, RiskBand.HIGH, RiskBand.CRITICAL)


class Weight(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One feature's term: its weight in logit per standard unit, and how to standardize."""

    weight: float
    mean: float
    scale: float
    why: str = ""


class RiskModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A model version: intercept, one Weight per feature, clip and band cut-offs."""

    version: str
    doc: str
    intercept: float
    clip: float
    bands: dict[RiskBand, float]  # lowest score of MEDIUM, HIGH and CRITICAL
    features: dict[str, Weight]


class Reason(msgspec.Struct, frozen=True):
    """A feature that raised the score: its contribution (logit) and its raw value."""

    feature: str
    contribution: float
    value: float


class Score(msgspec.Struct, frozen=True):
    """A customer's score as of ``as_of``, with the reasons that raised it most."""

    value: float
    band: RiskBand
    reasons: tuple[Reason, ...]
    model_version: str
    as_of: datetime


def parse_model(data: bytes | str) -> RiskModel:
    """The model in a JSON document; ValueError naming what is wrong with it."""
    try:
        model = msgspec.json.decode(data, type=RiskModel)
    except msgspec.DecodeError as exc:
        raise ValueError(f"risk model file is malformed: {exc}") from exc
    _check(model)
    return model


def _check(model: RiskModel) -> None:
    missing = [name for name in FEATURE_NAMES if name not in model.features]
    unknown = sorted(set(model.features) - set(FEATURE_NAMES))
    problems = [f"no weight for features {missing}"] if missing else []
    problems += [f"weights for unknown features {unknown}"] if unknown else []
    problems += [
        f"{name}: scale must be > 0 and weight, mean, scale finite"
        for name, w in model.features.items()
        if not (w.scale > 0 and all(map(math.isfinite, (w.weight, w.mean, w.scale))))
    ]
    problems += _check_bands(model.bands)
    if not (model.clip > 0 and math.isfinite(model.intercept)):
        problems.append("clip must be > 0 and intercept finite")
    elif not problems:
        bound = abs(model.intercept) + model.clip * sum(
            abs(w.weight) for w in model.features.values()
        )
        if bound > MAX_LOGIT:
            problems.append(f"|intercept| + clip * sum|weight| is {bound:.3f} > {MAX_LOGIT}")
    if problems:
        raise ValueError(f"risk model {model.version!r}: " + "; ".join(problems))


def _check_bands(bands: dict[RiskBand, float]) -> list[str]:
    if set(bands) != set(_RAISED):
        return [f"bands must give exactly {[b.value for b in _RAISED]}"]
    cuts = [bands[band] for band in _RAISED]
    if not all(0 < c < 1 for c in cuts) or not cuts[0] < cuts[1] < cuts[2]:
        return [f"band cut-offs {cuts} must increase strictly within (0, 1)"]
    return []


def load_model(version: str | None = None) -> RiskModel:
    """The packaged model ``version`` (default ``DEFAULT_VERSION``), checked, cached."""
    return _load(version or DEFAULT_VERSION)


@lru_cache(maxsize=8)
def _load(version: str) -> RiskModel:
    if not _VERSION.match(version):
        raise ValueError(f"not a model version: {version!r}")
    path = resources.files("paywatch.risk") / "models" / f"{version}.json"
    if not path.is_file():
        raise ValueError(f"no risk model {version!r} in paywatch/risk/models")
    model = parse_model(path.read_bytes())
    if model.version != version:
        raise ValueError(f"{version}.json says it is version {model.version!r}")
    return model


def model_from(spec: str) -> RiskModel:
    """The model a setting names: a packaged version, or a model file (``*.json``) such as
    ``paywatch risk train`` writes; ValueError naming what is wrong with it."""
    if not spec.endswith(".json"):
        return load_model(spec)
    try:
        data = Path(spec).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read risk model file {spec}: {exc.strerror}") from exc
    return parse_model(data)


def contributions(model: RiskModel, features: dict[str, float]) -> dict[str, float]:
    """Each feature's term of the logit (clipped, standardized, weighted)."""
    clip = model.clip
    out = {}
    for name, w in model.features.items():
        standard = (features[name] - w.mean) / w.scale
        out[name] = w.weight * min(max(standard, -clip), clip)
    return out


def sigmoid(z: float) -> float:
    """1 / (1 + e^-z), without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def score(model: RiskModel, features: CustomerFeatures, now: datetime) -> Score:
    """The customer's score as of ``now``."""
    values = vector(features, now)
    terms = contributions(model, values)
    value = sigmoid(model.intercept + math.fsum(terms.values()))
    raised = sorted((-t, name) for name, t in terms.items() if t > 0)[:TOP_REASONS]
    reasons = tuple(Reason(name, -t, values[name]) for t, name in raised)
    return Score(value, band(model, value), reasons, model.version, now)


def band(model: RiskModel, value: float) -> RiskBand:
    """The highest band whose cut-off ``value`` reaches (LOW below them all)."""
    reached = [b for b in _RAISED if value >= model.bands[b]]
    return reached[-1] if reached else RiskBand.LOW


def changed(old: Score | None, new: Score, *, min_delta: float = 0.05) -> bool:
    """Is ``new`` worth emitting after ``old``: first score, another model version, band
    change or a move of at least ``min_delta`` (1e-12 of slack: 0.30 after 0.25 counts)?"""
    if old is None or old.band is not new.band or old.model_version != new.model_version:
        return True
    return abs(new.value - old.value) >= min_delta - 1e-12
