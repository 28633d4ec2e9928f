"""A sweep node, run locally: a few trials of its trial component, and the best trial's outputs as the node's.

Azure ML samples a sweep node's search space, runs one job of the trial component per sample,
and ranks the trials by the primary metric they log; the node's outputs are the best trial's.
Locally the same search space is sampled with a seed (`sampling_algorithm.seed`, else
DEFAULT_SEED): grid takes the product of the choices in order, random (and bayesian, which
cannot be reproduced here) draws with that seed, so a run is reproducible, and trial k is the
same whatever the number of trials. Each trial is a job of the runner, reused like any job when
unchanged. Its metric is read from the metrics file the trial component writes into its output
(Train PyTorch Model's `training_metrics.csv`, one row per epoch): the best epoch's value.

The definition is checked and the trials drawn before any job runs; each problem is one UserError line.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..component_source import is_port, value_parser
from ..errors import UserError
from ..specs import TYPED_SUFFIX
from .graph import Node, _closest

DEFAULT_SEED = 42
DEFAULT_MAX_TRIALS = 4
GOALS = ("maximize", "minimize")
SAMPLING = ("random", "grid", "bayesian")
POLICIES = ("bandit", "median_stopping", "truncation_selection")
# Azure ML's search-space types and the numbers each one takes (choice takes `values`, a list).
DISTRIBUTIONS = {
    "choice": (), "randint": ("upper",), "uniform": ("min_value", "max_value"),
    "loguniform": ("min_value", "max_value"), "normal": ("mu", "sigma"), "lognormal": ("mu", "sigma"),
    "quniform": ("min_value", "max_value", "q"), "qloguniform": ("min_value", "max_value", "q"),
    "qnormal": ("mu", "sigma", "q"), "qlognormal": ("mu", "sigma", "q"),
}
SUMMARY = "sweep.json"  # every trial's values, metric and folder, in the sweep job's folder of the run


@dataclass
class Objective:
    metric: str
    goal: str  # maximize | minimize

    def better(self, value: float, than: float | None) -> bool:
        return than is None or (value > than if self.goal == "maximize" else value < than)


@dataclass
class TrialResult:
    number: int
    sampled: dict[str, str]  # input name -> the value the trial drew
    folder: Path | None  # None: the trial failed
    reused: bool
    metric: float | None  # the primary metric, as read from the trial's metrics file


@dataclass
class SweepResult:
    metric: str
    goal: str
    trials: list[TrialResult]
    best: int  # the best trial's number
    seconds: float  # spent running trials (reused ones take none)


@dataclass
class SweepPlan:
    """What one sweep node runs locally: its trials (each a Node with its drawn values) and how they are ranked."""

    node: Node
    objective: Objective
    sampling: str
    seed: int
    max_total_trials: int | None
    metrics_output: str  # the trial output holding the metrics file
    metrics_file: str
    trials: list[Node] = field(default_factory=list)


def _logged_by_train() -> tuple[str, ...]:
    """The metrics Train PyTorch Model logs every epoch: its metrics file's columns (and MLflow's names)."""
    from ..training.report import epoch_metrics
    from ..training.state import EpochResult

    return tuple(epoch_metrics(EpochResult(**{f.name: 0 for f in fields(EpochResult)})))


def _train_metrics() -> tuple[str, str, tuple[str, ...]]:
    from ..training.report import METRICS_FILE

    return "trained_model", METRICS_FILE, _logged_by_train()


# Trial components the runner can rank: (output holding the metrics file, the file, the metrics it holds).
TRIAL_METRICS = {"train_pytorch_model": _train_metrics}


def _where(node: Node, key: str) -> str:
    return f"pipeline: job {node.name!r}: {key}"


def _mapping(node: Node, key: str, required: bool = True) -> dict:
    value = node.raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{_where(node, key)} must be a mapping, got {value!r}")
    return value


def _number(node: Node, where: str, value, *, whole: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{_where(node, where)} must be a number, got {value!r}")
    if whole and value != int(value):
        raise UserError(f"{_where(node, where)} must be a whole number, got {value!r}")
    return value


def _objective(node: Node, logged: tuple[str, ...]) -> Objective:
    objective = _mapping(node, "objective")
    goal = str(objective.get("goal", ""))
    goal = goal[:1].lower() + goal[1:]  # Azure ML takes Maximize as maximize
    if goal not in GOALS:
        raise UserError(f"{_where(node, 'objective.goal')} is {objective.get('goal')!r}; it must be maximize or "
                        "minimize")
    metric = objective.get("primary_metric")
    if metric not in logged:
        raise UserError(f"{_where(node, 'objective.primary_metric')} is {metric!r}, which "
                        f"{node.spec.get('name')} does not log{_closest(str(metric), logged)}; it logs "
                        f"{', '.join(logged)}")
    return Objective(metric, goal)


def _sampling(node: Node) -> tuple[str, int]:
    sampling = node.raw.get("sampling_algorithm", "random")
    spec = {"type": sampling} if isinstance(sampling, str) else sampling
    if not isinstance(spec, dict) or str(spec.get("type", "")).lower() not in SAMPLING:
        raise UserError(f"{_where(node, 'sampling_algorithm')} is {sampling!r}; it must be one of "
                        f"{', '.join(SAMPLING)}")
    seed = spec.get("seed", DEFAULT_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"{_where(node, 'sampling_algorithm.seed')} must be a whole number, got {seed!r}")
    return str(spec["type"]).lower(), seed


def _max_total_trials(node: Node) -> int | None:
    limits = _mapping(node, "limits", required=False)
    value = limits.get("max_total_trials")
    if value is None:
        return None
    if _number(node, "limits.max_total_trials", value, whole=True) < 1:
        raise UserError(f"{_where(node, 'limits.max_total_trials')} must be at least 1, got {value!r}")
    return int(value)


def _check_policy(node: Node) -> None:
    policy = node.raw.get("early_termination")
    if policy is None:
        return
    kind = policy.get("type") if isinstance(policy, dict) else None
    if kind not in POLICIES:
        raise UserError(f"{_where(node, 'early_termination.type')} is {kind!r}; it must be one of "
                        f"{', '.join(POLICIES)}")


def _check_distribution(node: Node, key: str, spec, render) -> None:
    """One search-space entry: a known type with the numbers it takes, a choice with values, and every value it
    can give (a choice's values, a uniform's bounds) one the trial input accepts."""
    where = f"search_space.{key}"
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in DISTRIBUTIONS:
        shown = repr(kind) if isinstance(spec, dict) else f"not a mapping ({spec!r})"
        raise UserError(f"{_where(node, where)}: type {shown} is not a distribution Azure ML knows; use one of "
                        f"{', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise UserError(f"{_where(node, where)}: choice needs a non-empty list of values, got {values!r}")
        _check_values(node, key, [render(v) for v in values], "a value of its choice")
        return
    numbers = {name: _number(node, f"{where}.{name}", spec.get(name)) for name in DISTRIBUTIONS[kind]}
    if "min_value" in numbers and numbers["min_value"] >= numbers["max_value"]:
        raise UserError(f"{_where(node, where)}: min_value {numbers['min_value']} must be below max_value "
                        f"{numbers['max_value']}")
    for name in ("upper", "sigma", "q"):
        if name in numbers and numbers[name] <= 0:
            raise UserError(f"{_where(node, where)}: {name} must be above 0, got {numbers[name]}")
    if kind in ("uniform", "loguniform"):  # the bounds of the values it draws
        ends = [numbers["min_value"], numbers["max_value"]]
        _check_values(node, key, [render(math.exp(v) if kind == "loguniform" else v) for v in ends], "a bound")


def _check_values(node: Node, key: str, texts: list[str], what: str) -> None:
    parse = value_parser(node.spec["inputs"][key], azure=True)
    for text in texts:
        try:
            parse(text)
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{_where(node, f'search_space.{key}')}: {exc} ({what}; the trial input's type, range "
                            "and enum apply)") from None


def check_sweep(node: Node, render=str) -> SweepPlan:
    """A sweep node's definition, as far as the local runner and Azure ML need it; UserError at the first problem.

    `render`: a value as the trial's command line gets it.
    """
    trial_name = str(node.spec.get("name", "")).removesuffix(TYPED_SUFFIX)
    if trial_name not in TRIAL_METRICS:
        raise UserError(f"{_where(node, 'trial')}: the local runner sweeps only "
                        f"{', '.join(TRIAL_METRICS)} (it reads the metrics that component writes), not {trial_name!r}")
    if "distribution" in node.raw:
        raise UserError(f"{_where(node, 'distribution')}: a sweep node has no distribution; azure-ai-ml runs its "
                        "trials with the trial component's (docs/sweeps.md: set processes per node with "
                        "pipelines/image_classification_sweep.py --processes-per-node)")
    output, metrics_file, logged = TRIAL_METRICS[trial_name]()
    objective = _objective(node, logged)
    sampling, seed = _sampling(node)
    _check_policy(node)
    space = node.raw.get("search_space")
    if not isinstance(space, dict) or not space:
        raise UserError(f"{_where(node, 'search_space')} must map trial inputs to distributions, got {space!r}")
    inputs = node.spec.get("inputs") or {}
    parameters = [k for k, v in inputs.items() if not is_port(v)]
    for key, spec in space.items():
        if key not in inputs or key not in parameters:
            what = "a folder port, which cannot be swept" if key in inputs else "not an input of the trial"
            raise UserError(f"{_where(node, f'search_space.{key}')}: {key!r} is {what}{_closest(str(key), parameters)}"
                            f"; the trial's parameters are {', '.join(parameters)}")
        if key in node.inputs:
            raise UserError(f"{_where(node, f'search_space.{key}')}: {key!r} is also given in the job's inputs; "
                            "remove it from one of them")
        _check_distribution(node, key, spec, render)
        if sampling == "grid" and spec["type"] != "choice":
            raise UserError(f"{_where(node, f'search_space.{key}')}: grid sampling takes only choice, not "
                            f"{spec['type']}")
    return SweepPlan(node, objective, sampling, seed, _max_total_trials(node), output, metrics_file)


def _draw(spec: dict, rng: random.Random):
    """One value of an Azure ML distribution (its documented definition)."""
    kind = spec["type"]
    if kind == "choice":
        return rng.choice(spec["values"])
    if kind == "randint":
        return rng.randrange(int(spec["upper"]))
    if kind.endswith("normal"):
        value = rng.gauss(spec["mu"], spec["sigma"])
    else:
        value = rng.uniform(spec["min_value"], spec["max_value"])
    if kind.removeprefix("q") in ("loguniform", "lognormal"):
        value = math.exp(value)
    if kind.startswith("q"):
        value = round(value / spec["q"]) * spec["q"]
    return value


def _samples(plan: SweepPlan, count: int) -> list[dict]:
    """Up to `count` distinct points of the search space, in a fixed order; trial k does not depend on `count`."""
    space = plan.node.search_space
    if plan.sampling == "grid":
        grid = itertools.product(*(spec["values"] for spec in space.values()))
        return [dict(zip(space, point)) for point in itertools.islice(grid, count)]
    rng = random.Random(plan.seed)
    points: list[dict] = []
    seen: set[str] = set()
    for _ in range(100 * count):  # a small choice-only space may hold fewer than `count` points
        point = {key: _draw(spec, rng) for key, spec in space.items()}
        if repr(point) not in seen:
            seen.add(repr(point))
            points.append(point)
            if len(points) == count:
                break
    return points


def plan_trials(plan: SweepPlan, max_trials: int, render) -> SweepPlan:
    """The plan with its trials: at most max_trials (and max_total_trials), each a copy of the node with its values."""
    count = min(max_trials, plan.max_total_trials or max_trials)
    for number, point in enumerate(_samples(plan, count), 1):
        sampled = {key: render(value) for key, value in point.items()}
        plan.trials.append(replace(plan.node, inputs={**plan.node.inputs, **sampled}, sampled=sampled, trial=number))
    return plan


def trial_metric(plan: SweepPlan, folder: Path) -> float | None:
    """A finished trial's primary metric: its best epoch's value in the metrics file; None when it logged none."""
    path = folder / plan.metrics_output / plan.metrics_file
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    values = []
    for row in rows:
        try:
            value = float(row.get(plan.objective.metric) or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            values.append(value)
    if not values:
        return None
    return max(values) if plan.objective.goal == "maximize" else min(values)


def describe(sampled: dict[str, str]) -> str:
    """A trial's values as one short line: key=value, numbers to 4 significant digits."""
    parts = []
    for key, text in sampled.items():
        try:
            number = float(text)
            shown = text if number.is_integer() and "." not in text else f"{number:.4g}"
        except ValueError:
            shown = text
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def run_trials(plan: SweepPlan, run_job, folder: Path, step: str, echo):
    """Every trial in turn, each a job of the runner: (the sweep's result, the best trial's job result, its key).

    `run_job(node, folder, step, note)` runs or reuses one job and returns (its result, its reuse key); `note`
    adds the trial's metric to its status line. A failed trial is reported and passed over, as on Azure ML;
    UserError when no trial logs the metric.
    """
    name, objective = plan.node.name, plan.objective
    drawn = "grid" if plan.sampling == "grid" else f"{plan.sampling}, seed {plan.seed}"
    drawn += ", drawn at random locally" if plan.sampling == "bayesian" else ""
    echo(f"{step} {name}: sweep, {len(plan.trials)} trials ({drawn}), {objective.goal} {objective.metric}")
    trials: list[TrialResult] = []
    metrics: dict[Path, float | None] = {}
    best, seconds = None, 0.0

    def note(trial_folder: Path) -> str:
        metrics[trial_folder] = value = trial_metric(plan, trial_folder)
        return f"; {objective.metric} {'not logged' if value is None else f'{value:.4f}'}"

    for trial in plan.trials:
        label = f"    trial {trial.trial}/{len(plan.trials)} [{describe(trial.sampled)}]"
        try:
            result, key = run_job(trial, folder / f"trial_{trial.trial}", label, note)
        except UserError as exc:  # its status line and log tail are out; the next trial runs
            echo(f"    {exc}")
            trials.append(TrialResult(trial.trial, trial.sampled, None, False, None))
            continue
        seconds += result.seconds
        trials.append(TrialResult(trial.trial, trial.sampled, result.folder, result.reused, metrics[result.folder]))
        if trials[-1].metric is not None and objective.better(trials[-1].metric, best and best[0].metric):
            best = trials[-1], result, key
    if best is None:
        raise UserError(f"job {name!r}: no trial of the sweep logged {objective.metric}; see the trials' logs under "
                        f"{folder}")
    chosen, result, key = best
    sweep = SweepResult(objective.metric, objective.goal, trials, chosen.number, seconds)
    _write_summary(folder / SUMMARY, plan, sweep)
    echo(f"{step} {name}: best trial {chosen.number} ({objective.metric} {chosen.metric:.4f}; "
         f"{describe(chosen.sampled)}); its outputs are the job's: {chosen.folder}")
    return sweep, result, key


def _write_summary(path: Path, plan: SweepPlan, sweep: SweepResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"objective": {"primary_metric": sweep.metric, "goal": sweep.goal},
           "sampling_algorithm": {"type": plan.sampling, "seed": plan.seed}, "best_trial": sweep.best,
           "trials": [{"trial": t.number, "values": t.sampled, "metric": t.metric, "reused": t.reused,
                       "folder": None if t.folder is None else str(t.folder)} for t in sweep.trials]}
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
