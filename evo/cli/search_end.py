"""What ``evovae search`` prints and writes when a search ends: the final population, the stop line (the last
line, saying why it stopped and where its results came from) and result.json."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..head.search_run import SearchRun
from ..head.tasks import AsyncEvaluator

__all__ = ["finish"]


def finish(search: SearchRun, evaluator: AsyncEvaluator, *, output: str | None = None) -> None:
    """Print the final population and the stop line (last: it says why the search stopped), write
    result.json (and a copy to ``output``)."""
    strategy, runner = search.strategy, search.runner
    print("final population (best first):")
    for rank_, e in enumerate(strategy.population, 1):
        print(f"{rank_:3d}. {e.loss:9.3f}  {e.genotype}  ({e.epochs} epochs)")
    summary = search.summary()
    summary["space"] = asdict(search.config.space)  # the grid searched (the options, the latent capped)
    clock = getattr(evaluator, "summary", None)
    if clock is not None:  # --simulate-workers: the simulated clock, for anytime-against-time plots
        simulated = summary["simulated"] = clock()
        print(f"simulated: {simulated['workers']} workers, {simulated['seconds']:.0f} s of wall clock")
    reason = search.stop_reason.value if search.stop_reason else "nothing more to ask"  # the last line says why
    print(f"stopped: {reason}; evaluations: {runner.evaluated} run now, {runner.replayed + runner.reused} from the "
          f"journal ({runner.replayed} replayed, {runner.reused} received before the restart), {runner.cache_hits} "
          f"from the cache; {strategy.asked_epochs} training epochs in all, {runner.epochs_trained} trained now")
    search.finish(summary)
    if output:
        Path(output).write_text((search.run_dir / "result.json").read_text())
