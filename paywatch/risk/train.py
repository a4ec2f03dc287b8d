"""Fitting the risk model on a tenant's own history, and measuring it honestly.

* ``examples``: one per invoice episode (its first failure after the latest close), with the
  features the worker would have had at that moment (the customer's events up to and
  including the failure, never a later one) and the label 1 when the invoice was NOT
  recovered within ``window_days`` (the score reads "chance the billing is lost").
  Episodes whose window is still running at the end of the data are left out: their label
  is not known yet.
* ``time_split``: the latest ``test_share`` of episodes is the test set; training episodes
  whose label window reaches into the test period are dropped (purged), so no outcome the
  test period decides is learnt from.
* ``fit``: L2-regularized logistic regression by Newton's method (IRLS) on the features
  standardized with the training means and scales and clipped as ``model.score`` clips
  them, so the fitted weights mean the same thing at scoring time.
* ``evaluate``: AUC, log loss and expected calibration error (10 equal-width bins).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from paywatch.risk.features import FEATURE_NAMES, CustomerFeatures, evolve, vector
from paywatch.risk.model import (
    MAX_LOGIT,
    RiskModel,
    Weight,
    contributions,
    load_model,
    sigmoid,
)
from paywatch.schemas.models import EventType, PaymentEvent

_LOSES = frozenset(
    {EventType.INVOICE_VOIDED, EventType.INVOICE_UNCOLLECTIBLE, EventType.SUBSCRIPTION_CANCELED}
)
_EPS = 1e-15
Matrix = NDArray[np.float64]


@dataclass(frozen=True)
class Example:
    """One invoice episode: the features as of its first failure and its outcome."""

    tenant: str
    invoice_ref: str
    customer_ref: str
    at: datetime  # the episode's first failure
    decided_at: datetime  # when the label is known: at + window
    features: tuple[float, ...]  # FEATURE_NAMES order
    label: int  # 1: not recovered within the window


@dataclass(frozen=True)
class Metrics:
    """How well scores rank and match outcomes on a set of examples."""

    auc: float  # nan with a single class
    log_loss: float
    ece: float
    n: int
    positives: int


@dataclass
class _Episode:
    at: datetime
    features: tuple[float, ...]
    customer: str
    closed_at: datetime | None = None
    recovered: bool = False


def examples(events: Iterable[PaymentEvent], window_days: int = 30) -> list[Example]:
    """One example per invoice episode whose ``window_days`` ended within the data."""
    ordered = sorted(events, key=lambda e: e.occurred_at)  # stable: ties keep input order
    if not ordered:
        return []
    window = timedelta(days=window_days)
    folds: dict[tuple[str, str], CustomerFeatures] = {}
    open_: dict[tuple[str, str], _Episode] = {}
    done: list[tuple[tuple[str, str], _Episode]] = []
    for event in ordered:
        who = (event.tenant, event.customer_ref or f"invoice:{event.invoice_ref}")
        folds[who] = evolve(folds.get(who), event)
        invoice = (event.tenant, event.invoice_ref)
        if event.type is EventType.PAYMENT_FAILED and invoice not in open_:
            values = vector(folds[who], event.occurred_at)
            open_[invoice] = _Episode(event.occurred_at, tuple(values.values()), who[1])
        elif invoice in open_ and (
            event.type is EventType.PAYMENT_SUCCEEDED or event.type in _LOSES
        ):
            episode = open_.pop(invoice)
            episode.closed_at = event.occurred_at
            episode.recovered = event.type is EventType.PAYMENT_SUCCEEDED
            done.append((invoice, episode))
    done.extend(open_.items())
    end = ordered[-1].occurred_at
    return sorted(
        (_example(invoice, ep, window) for invoice, ep in done if ep.at + window <= end),
        key=lambda x: (x.at, x.tenant, x.invoice_ref),
    )


def _example(invoice: tuple[str, str], episode: _Episode, window: timedelta) -> Example:
    closed = episode.closed_at
    saved = episode.recovered and closed is not None and closed <= episode.at + window
    tenant, ref = invoice
    decided = episode.at + window
    return Example(
        tenant, ref, episode.customer, episode.at, decided, episode.features, int(not saved)
    )


def time_split(
    data: Sequence[Example], test_share: float = 0.2
) -> tuple[list[Example], list[Example]]:
    """(train, test): the latest ``test_share`` is the test set; training examples whose
    label was decided after the test period began are purged."""
    if not 0 < test_share < 1:
        raise ValueError("test_share must be within (0, 1)")
    ordered = sorted(data, key=lambda x: x.at)
    cut = len(ordered) - max(1, round(len(ordered) * test_share)) if ordered else 0
    test = ordered[cut:]
    if not test:
        return [], []
    begins = test[0].at
    return [x for x in ordered[:cut] if x.decided_at <= begins], test


def _arrays(data: Sequence[Example]) -> tuple[Matrix, Matrix]:
    x = np.array([e.features for e in data], dtype=np.float64).reshape(
        len(data), len(FEATURE_NAMES)
    )
    return x, np.array([e.label for e in data], dtype=np.float64)


def _newton(z: Matrix, y: Matrix, l2: float, iterations: int = 50) -> Matrix:
    """Weights (intercept first) minimizing log loss * n + l2/2 * |w|^2 (intercept free)."""
    design = np.hstack([np.ones((len(z), 1)), z])
    beta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -35, 35)))
        grad = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, grad)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return beta


def fit(
    train: Sequence[Example],
    *,
    l2: float = 1.0,
    prior: RiskModel | None = None,
    version: str = "trained",
    doc: str = "",
) -> RiskModel:
    """A model fitted on ``train``; clip and band cut-offs kept from ``prior`` (default the
    packaged model). When the logit bound (|intercept| + clip * sum|w| <= MAX_LOGIT) is
    broken, ``l2`` is raised until it holds and the doc says so."""
    prior = prior or load_model()
    x, y = _arrays(train)
    if len(train) < 2 or y.min() == y.max():
        raise ValueError("training needs at least two examples of both outcomes")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale <= 1e-12] = 1.0  # a constant feature: weight 0 whatever the scale
    z = np.clip((x - mean) / scale, -prior.clip, prior.clip)
    used = l2
    beta = _newton(z, y, used)
    while abs(beta[0]) + prior.clip * float(np.abs(beta[1:]).sum()) > MAX_LOGIT * 0.999:
        used *= 4
        beta = _newton(z, y, used)
    note = f" l2 raised from {l2:g} to {used:g} to keep the logit bound." if used != l2 else ""
    weights = {
        name: Weight(float(w), float(m), float(s), f"fitted: {float(w):+.3f} logit per unit")
        for name, w, m, s in zip(FEATURE_NAMES, beta[1:], mean, scale, strict=True)
    }
    text = doc or f"Fitted by paywatch risk train on {len(train)} examples ({int(y.sum())} lost)."
    return RiskModel(version, text + note, float(beta[0]), prior.clip, dict(prior.bands), weights)


def predict(model: RiskModel, data: Sequence[Example]) -> list[float]:
    """The model's score for each example (the same arithmetic as ``model.score``)."""
    out = []
    for example in data:
        terms = contributions(model, dict(zip(FEATURE_NAMES, example.features, strict=True)))
        out.append(sigmoid(model.intercept + math.fsum(terms.values())))
    return out


def evaluate(model: RiskModel, test: Sequence[Example]) -> Metrics:
    """AUC, log loss and 10-bin ECE of ``model`` on ``test``."""
    p = np.array(predict(model, test), dtype=np.float64)
    y = np.array([e.label for e in test], dtype=np.float64)
    return metrics(p, y)


def metrics(p: Matrix, y: Matrix) -> Metrics:
    """The metrics of scores ``p`` against labels ``y`` (1 = lost)."""
    n, positives = len(y), int(y.sum())
    if n == 0:
        return Metrics(math.nan, math.nan, math.nan, 0, 0)
    q = np.clip(p, _EPS, 1 - _EPS)
    log_loss = float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(
        abs(float(p[bins == b].mean()) - float(y[bins == b].mean())) * int((bins == b).sum()) / n
        for b in range(10)
        if (bins == b).any()
    )
    return Metrics(_auc(p, y), log_loss, ece, n, positives)


def _auc(p: Matrix, y: Matrix) -> float:
    """Mann-Whitney AUC, ties counted half."""
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))
