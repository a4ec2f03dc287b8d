"""Risk model quality on a population it never saw, and pure scoring speed.

Usage: .venv/bin/python bench/bench_risk.py [--customers 3000] [--months 12]
       [--train-seed 1] [--eval-seed 2] [--rounds 3]

1. Generates a training population (``--train-seed``) and fits a model on its time split's
   training part, as ``paywatch risk train`` does.
2. Generates an evaluation population with another seed: neither model saw it. Prints AUC,
   log loss and 10-bin calibration error (ECE) of the packaged prior ``risk-v1``, of the
   trained model, and of the generator's own latent loss probability (the best any model
   could do: the Bayes bound the observable features fall short of).
3. Times the worker's pure per-event work over the evaluation population's events:
   ``evolve`` of the customer's features, then ``score`` as of the event (events/s, median
   of ``--rounds``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

import numpy as np

from paywatch.risk.features import CustomerFeatures, evolve
from paywatch.risk.model import RiskModel, load_model, score
from paywatch.risk.population import Population, generate
from paywatch.risk.train import Example, Metrics, evaluate, examples, fit, metrics, time_split

START = datetime(2025, 1, 1, tzinfo=UTC)


def _row(name: str, m: Metrics) -> str:
    return f"  {name:<28} {m.auc:7.4f} {m.log_loss:9.4f} {m.ece:7.4f} {m.n:6d} {m.positives:6d}"


def _oracle(people: Population, data: list[Example]) -> Metrics:
    truth = {t.invoice_ref: t.p_lost for t in people.truth}
    p = np.array([truth[x.invoice_ref] for x in data], dtype=np.float64)
    return metrics(p, np.array([x.label for x in data], dtype=np.float64))


def _speed(people: Population, model: RiskModel, rounds: int) -> float:
    rates = []
    for _ in range(rounds):
        folds: dict[str | None, CustomerFeatures] = {}
        started = time.perf_counter()
        for event in people.events:
            state = evolve(folds.get(event.customer_ref), event)
            folds[event.customer_ref] = state
            score(model, state, event.occurred_at)
        rates.append(len(people.events) / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    """Print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=3000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--eval-seed", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.train_seed == args.eval_seed:
        ap.error("the evaluation seed must differ from the training seed")
    started = time.perf_counter()
    source = generate(args.customers, args.months, args.train_seed, START)
    train, _ = time_split(examples(source.events))
    trained = fit(train, version="bench-trained")
    unseen = generate(args.customers, args.months, args.eval_seed, START)
    data = examples(unseen.events)
    setup = time.perf_counter() - started
    lost = sum(t.lost for t in unseen.truth)
    print(f"risk bench: {args.customers} customers x {args.months} months, setup {setup:.1f} s")
    print(
        f"  training seed {args.train_seed}: {len(source.events)} events, {len(train)} "
        f"training episodes; evaluation seed {args.eval_seed}: {len(unseen.events)} events, "
        f"{unseen.renewals} renewals, {len(unseen.truth)} failed "
        f"({len(unseen.truth) / unseen.renewals:.1%}), {lost} lost ({lost / len(unseen.truth):.1%})"
    )
    head = ("AUC", 7), ("log loss", 9), ("ECE", 7), ("n", 6), ("lost", 6)
    print(f"  {'model (unseen population)':<28}" + "".join(f" {h:>{w}}" for h, w in head))
    prior = load_model()
    print(_row(f"{prior.version} (shipped prior)", evaluate(prior, data)))
    print(_row(f"trained on seed {args.train_seed}", evaluate(trained, data)))
    print(_row("latent truth (Bayes bound)", _oracle(unseen, data)))
    rate = _speed(unseen, prior, args.rounds)
    print(f"  evolve+score: {rate:,.0f} events/s (median of {args.rounds}, one core)")


if __name__ == "__main__":
    main()
