"""evo.search: the ask/evaluate/tell loop and the progress line."""
import pytest

from evo.engine import EvolutionEngine
from evo.evaluation import Evaluation
from evo.random_search import RandomSearch
from evo.head.progress import format_report, run_search
from evo.space import SearchSpace
from evo.strategy import GenerationReport

SMALL = SearchSpace(max_layers=2, width_min=50, width_max=150, width_step=50,
                    latent_min=10, latent_max=20, latent_step=10)


def synthetic_loss(g):
    return 100.0 + (sum(g.encoder) + sum(g.decoder)) / 100 + g.latent


class CountingEvaluator:
    """Evaluates a batch, answering in reverse order (any order is allowed)."""

    def __init__(self):
        self.batches = []

    def __call__(self, batch):
        self.batches.append(list(batch))
        return [Evaluation.succeeded(g, synthetic_loss(g)) for g in reversed(batch)]


@pytest.mark.parametrize("generations", [1, 2, 6])
def test_run_search_runs_exactly_the_asked_generations(generations):
    engine = EvolutionEngine(SearchSpace(), mu=5, lam=5, seed=0)
    evaluate, seen_reports = CountingEvaluator(), []
    reports = run_search(engine, evaluate, generations, on_generation=seen_reports.append)
    assert len(reports) == generations
    assert [r.generation for r in reports] == list(range(generations))
    assert seen_reports == reports and all(a is b for a, b in zip(seen_reports, reports))
    assert all(isinstance(r, GenerationReport) for r in reports)
    assert engine.generation == generations
    assert len(evaluate.batches) == generations
    assert reports[-1].total_evaluations == sum(len(b) for b in evaluate.batches)
    assert len(evaluate.batches[0]) == 5


def test_run_search_matches_a_hand_driven_loop():
    auto = EvolutionEngine(SMALL, mu=6, lam=6, seed=4)
    reports = run_search(auto, CountingEvaluator(), 8)
    manual = EvolutionEngine(SMALL, mu=6, lam=6, seed=4)
    for _ in range(8):
        batch = manual.ask()
        manual.tell([Evaluation.succeeded(g, synthetic_loss(g)) for g in batch])
    assert auto.population == manual.population
    assert reports[-1].population == manual.history[-1].population


def test_run_search_skips_the_evaluator_on_an_empty_batch():
    tiny = SearchSpace(max_layers=1, width_min=50, width_max=50, latent_min=10, latent_max=20, latent_step=10)
    evaluate = CountingEvaluator()
    reports = run_search(RandomSearch(tiny, mu=2, batch=2, seed=0), evaluate, 4)
    assert len(reports) == 4
    assert len(evaluate.batches) == 1                      # after the first round nothing is left to ask
    assert [r.evaluated for r in reports] == [2, 0, 0, 0]


@pytest.mark.parametrize("generations", [0, -1])
def test_run_search_needs_at_least_one_generation(generations):
    engine = EvolutionEngine(SMALL, mu=3, lam=3, seed=0)
    with pytest.raises(ValueError):
        run_search(engine, CountingEvaluator(), generations)
    assert engine.generation == 0


def test_format_report_is_one_line_with_the_best_genotype():
    engine = EvolutionEngine(SMALL, mu=4, lam=4, seed=0)
    reports = run_search(engine, CountingEvaluator(), 3)
    for report in reports:
        line = format_report(report)
        assert "\n" not in line
        assert str(report.best.genotype) in line
        assert f"{report.best.loss:.2f}" in line
        assert f"gen {report.generation:3d}" in line
        assert line.startswith("gen")
    line = format_report(reports[-1], extra="eta 3m")
    assert line.endswith("  eta 3m") and "\n" not in line


def test_format_report_without_a_population():
    engine = EvolutionEngine(SMALL, mu=3, lam=3, seed=0)
    report = engine.tell([Evaluation.failed(g, "crash") for g in engine.ask()])
    line = format_report(report)
    assert "\n" not in line and "n/a" in line and "failed 3" in line
