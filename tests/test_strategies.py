"""The built-in strategies: legal unseen candidates, exact budget, reproducible asks, the paper's operators."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest

from nasengine import BatchStrategy, registry
from nasengine.errors import ConstraintUnsatisfiable, NasEngineError
from nasengine.interfaces import Arch, Strategy
from nasengine.settings.config import SearchConfig
from nasengine.strategies.evolution import EvolutionStrategy
from nasengine.strategies.random_search import RandomStrategy
from nasengine.strategies.variation import crossover, mutate
from nasengine.studies.search_compare import budget_matched_options

CHOICES = (4,) * 20
STRATEGIES = [EvolutionStrategy, RandomStrategy]
Score = Callable[[Arch], float]


def in_window(arch: Arch) -> bool:
    """About two thirds of the 4^20 space: a stand-in for a FLOPs window."""
    return 25 <= sum(arch) <= 35


def make(cls: type[BatchStrategy], seed: int = 0, constraint=in_window, choices=CHOICES, **options) -> BatchStrategy:
    options = {"population": 10, "generations": 5, **options}
    if cls is EvolutionStrategy:
        options.setdefault("top_k", 3)
    return cls(choices, constraint, seed, **options)


def drive(strategy: BatchStrategy, score: Score, shuffle_tells: int | None = None) -> list[list[Arch]]:
    """Ask/tell until finished; returns every batch. ``shuffle_tells`` seeds a shuffle of each tell."""
    batches = []
    while not strategy.finished:
        batch = strategy.ask()
        results = [(arch, score(arch)) for arch in batch]
        if shuffle_tells is not None:
            random.Random(shuffle_tells + len(batches)).shuffle(results)
        strategy.tell(results)
        batches.append(batch)
    return batches


def ones(arch: Arch) -> float:
    return float(arch.count(1))


def hamming(a: Arch, b: Arch) -> int:
    return sum(x != y for x, y in zip(a, b))


@pytest.mark.parametrize("cls", STRATEGIES)
def test_every_candidate_is_legal_new_and_the_budget_exact(cls):
    strategy = make(cls, population=12, generations=6)
    batches = drive(strategy, ones)
    flat = [arch for batch in batches for arch in batch]
    assert [len(batch) for batch in batches] == [12] * 6
    assert all(in_window(arch) for arch in flat)
    assert len(set(flat)) == len(flat)
    assert all(len(arch) == 20 and all(isinstance(c, int) and 0 <= c < 4 for c in arch) for arch in flat)
    assert strategy.finished and strategy.ask() == []


@pytest.mark.parametrize("cls", STRATEGIES)
def test_the_default_budget_is_the_papers_thousand(cls):
    strategy = cls(CHOICES, in_window, 0)
    assert sum(len(batch) for batch in drive(strategy, ones)) == 1000


@pytest.mark.parametrize("cls", STRATEGIES)
def test_mixed_choice_counts_stay_in_range(cls):
    choices = (2, 3, 5, 1, 7) * 3
    flat = [arch for batch in drive(make(cls, choices=choices, constraint=lambda a: True), ones) for arch in batch]
    assert all(0 <= c < n for arch in flat for c, n in zip(arch, choices))
    assert all(arch[3] == 0 for arch in flat)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_not_finished_until_the_last_batch_is_told(cls):
    strategy = make(cls, generations=2)
    strategy.tell([(arch, 0.0) for arch in strategy.ask()])
    last = strategy.ask()
    assert not strategy.finished
    strategy.tell([(arch, 0.0) for arch in last])
    assert strategy.finished


@pytest.mark.parametrize("cls", STRATEGIES)
def test_same_seed_and_scores_give_the_same_asks_whatever_the_tell_order(cls):
    first = drive(make(cls, seed=3), ones)
    assert drive(make(cls, seed=3), ones, shuffle_tells=1) == first
    assert drive(make(cls, seed=4), ones) != first


def test_global_random_state_does_not_leak_in():
    random.seed(1)
    first = drive(make(EvolutionStrategy, seed=3), ones)
    random.seed(2)
    assert drive(make(EvolutionStrategy, seed=3), ones) == first


def test_evolution_follows_the_scores_and_random_ignores_them():
    def zeros(arch: Arch) -> float:
        return float(arch.count(0))

    assert drive(make(EvolutionStrategy), ones) != drive(make(EvolutionStrategy), zeros)
    assert drive(make(RandomStrategy), ones) == drive(make(RandomStrategy), zeros)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_replaying_recorded_scores_reproduces_the_search(cls):
    noise = random.Random(7)  # scores that cannot be recomputed: only the record can replay them
    history: dict[Arch, float] = {}

    def noisy(arch: Arch) -> float:
        history[arch] = ones(arch) + noise.gauss(0, 3)
        return history[arch]

    original = drive(make(cls, seed=11, generations=8), noisy)
    replayed = drive(make(cls, seed=11, generations=8), history.__getitem__, shuffle_tells=5)
    assert replayed == original


def test_evolution_beats_random_on_a_hidden_target():
    def best(cls: type[BatchStrategy], seed: int) -> float:
        target = tuple(random.Random(100 + seed).randrange(4) for _ in range(20))

        def matches(arch: Arch) -> float:
            return float(20 - hamming(arch, target))

        strategy = make(cls, seed=seed, constraint=lambda a: True, population=20, generations=10)
        return max(matches(arch) for batch in drive(strategy, matches) for arch in batch)

    seeds = range(5)
    evolution = statistics.fmean(best(EvolutionStrategy, s) for s in seeds)
    baseline = statistics.fmean(best(RandomStrategy, s) for s in seeds)
    assert evolution >= baseline + 3, (evolution, baseline)


def test_mutation_resamples_each_gene_with_the_given_probability():
    rng = random.Random(0)
    parent = (0,) * 20
    children = [mutate(parent, CHOICES, 0.1, rng) for _ in range(5000)]
    changed = sum(hamming(child, parent) for child in children) / (5000 * 20)
    assert changed == pytest.approx(0.1 * 3 / 4, abs=0.005)  # a resampled gene keeps its value 1 time in 4
    resampled = [mutate(parent, (3,) * 20, 1.0, rng) for _ in range(1000)]
    for value in range(3):
        assert sum(child.count(value) for child in resampled) / 20_000 == pytest.approx(1 / 3, abs=0.02)
    assert mutate(parent, CHOICES, 0.0, rng) == parent


def test_crossover_takes_each_gene_from_either_parent_evenly():
    rng = random.Random(0)
    children = [crossover((0,) * 20, (1,) * 20, rng) for _ in range(2000)]
    assert all(set(child) <= {0, 1} for child in children)
    assert sum(sum(child) for child in children) / 40_000 == pytest.approx(0.5, abs=0.02)


def _second_generation(scores: Callable[[list[Arch]], list[float]], **options) -> tuple[list[Arch], list[Arch]]:
    strategy = make(EvolutionStrategy, constraint=lambda a: True, population=20, top_k=1, **options)
    first = strategy.ask()
    strategy.tell(list(zip(first, scores(first))))
    return first, strategy.ask()


def test_children_come_from_the_top_k_parents():
    first, second = _second_generation(lambda batch: [ones(arch) for arch in batch])
    parent = max(first, key=ones)
    mutants, crossed = second[:10], second[10:]
    assert all(1 <= hamming(child, parent) <= 6 for child in mutants)
    # with one parent crossover can only repeat it, so random architectures fill that half
    assert statistics.fmean(hamming(child, parent) for child in crossed) > 10


def test_ties_go_to_the_earliest_asked_and_nan_ranks_last():
    first, second = _second_generation(lambda batch: [float("nan")] + [1.0] * (len(batch) - 1))
    assert all(hamming(child, first[1]) <= 6 for child in second[:10])


def test_parents_come_from_everything_scored_so_far():
    strategy = make(EvolutionStrategy, constraint=lambda a: True, population=20, top_k=1)
    first = strategy.ask()
    champion = first[7]
    strategy.tell([(arch, 100.0 if arch == champion else 0.0) for arch in first])
    second = strategy.ask()
    runner_up = second[-1]  # a random filler, far from the champion
    assert hamming(runner_up, champion) > 6
    strategy.tell([(arch, 50.0 if arch == runner_up else 0.0) for arch in second])
    assert all(hamming(child, champion) <= 6 for child in strategy.ask()[:10])


@pytest.mark.timeout(10)
@pytest.mark.parametrize("cls", STRATEGIES)
@pytest.mark.parametrize("choices", [CHOICES, (2, 2, 2)], ids=["large", "tiny"])
def test_an_impossible_constraint_raises_quickly(cls, choices):
    calls = 0

    def never(arch: Arch) -> bool:
        nonlocal calls
        calls += 1
        return False

    strategy = make(cls, choices=choices, constraint=never, max_tries=500)
    with pytest.raises(ConstraintUnsatisfiable, match="no architecture satisfies the FLOPs constraint after 500 tries"):
        strategy.ask()
    assert calls <= 500 + 8


@pytest.mark.parametrize("cls", STRATEGIES)
def test_a_small_space_is_used_up_then_the_search_finishes(cls):
    legal = {(a, b, c) for a in range(2) for b in range(2) for c in range(2) if a + b + c <= 2}
    strategy = make(cls, choices=(2, 2, 2), constraint=lambda arch: sum(arch) <= 2, population=4, generations=5)
    batches = drive(strategy, ones)
    assert [len(batch) for batch in batches] == [4, 3]
    assert sorted(arch for batch in batches for arch in batch) == sorted(legal)


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (EvolutionStrategy, {"top_k": 11}, r"top_k \(11\) must not exceed population \(10\)"),
        (EvolutionStrategy, {"top_k": 0}, "top_k must be an integer >= 1"),
        (EvolutionStrategy, {"mutation_prob": 1.5}, r"mutation_prob must be a number in \[0, 1\]"),
        (EvolutionStrategy, {"mutation_prob": "0.1"}, "mutation_prob must be a number"),
        (EvolutionStrategy, {"population": 0}, "population must be an integer >= 1"),
        (RandomStrategy, {"population": 2.5}, "population must be an integer"),
        (RandomStrategy, {"generations": True}, "generations must be an integer"),
        (RandomStrategy, {"max_tries": 0}, "max_tries must be an integer >= 1"),
        (RandomStrategy, {"seed": None}, "seed must be an integer"),
        (RandomStrategy, {"choices": ()}, "choices must be a non-empty list"),
        (EvolutionStrategy, {"choices": (4, 0)}, "choices must be a non-empty list of positive ints"),
    ],
)
def test_bad_options_are_explained(cls, options, message):
    with pytest.raises(NasEngineError, match=message):
        make(cls, **options)


@pytest.mark.parametrize("name", ["evolution", "random"])
def test_registered_and_unknown_options_rejected(name):
    cls = registry.get("strategy", name)
    assert cls in STRATEGIES and cls.name == name
    assert cls.description and "\n" not in cls.description
    with pytest.raises(NasEngineError, match=f"strategy '{name}' has no option 'populaton'; its options: population"):
        registry.create("strategy", name, choices=CHOICES, constraint=in_window, seed=0, populaton=5)


@pytest.mark.parametrize("cls", STRATEGIES)
def test_tell_rejects_what_was_not_asked(cls):
    strategy = make(cls)
    with pytest.raises(NasEngineError, match="never asked"):
        strategy.tell([((0,) * 20, 1.0)])
    batch = strategy.ask()
    with pytest.raises(NasEngineError, match="never asked"):
        strategy.tell([(arch, 1.0) for arch in batch] + [((0,) * 20, 1.0)])  # all-zero breaks the window
    with pytest.raises(NasEngineError, match="twice"):
        strategy.tell([(batch[0], 1.0), (batch[0], 2.0)])
    with pytest.raises(NasEngineError, match="scores must be numbers"):
        strategy.tell([(batch[0], "good")])
    with pytest.raises(NasEngineError, match="have no score"):
        strategy.ask()
    strategy.tell([(list(arch), 1.0) for arch in batch[:3]])  # partial tells add up; lists are fine
    with pytest.raises(NasEngineError, match="twice"):
        strategy.tell([(batch[0], 1.0)])
    strategy.tell([(arch, 1.0) for arch in batch[3:]])
    assert len(strategy.ask()) == 10


def test_the_batch_strategy_base_and_option_checks_are_public():
    """The base and checks live in the core (``from nasengine import BatchStrategy``); the strategy_base
    docstring's example passes."""
    import nasengine
    from nasengine import check_int, check_probability, strategy_base
    from nasengine.testing import check_strategy

    assert nasengine.BatchStrategy is strategy_base.BatchStrategy
    assert issubclass(EvolutionStrategy, BatchStrategy) and issubclass(RandomStrategy, BatchStrategy)
    with pytest.raises(NasEngineError, match="strategy option step must be a number in"):
        check_probability("step", 2)
    with pytest.raises(NasEngineError, match="strategy option population must be an integer >= 1, not 0"):
        check_int("population", 0, minimum=1)

    class HillClimb(BatchStrategy):
        name = "hill-climb"

        def __init__(self, choices, constraint, seed, *, population=10, generations=10, step=0.2, max_tries=10_000):
            super().__init__(
                choices, constraint, seed, population=population, generations=generations, max_tries=max_tries
            )
            self.step = check_probability("step", step)

        def _propose(self, count):
            batch = []
            if self._scores:
                best = max(self._scores, key=self._scores.get)
                self._fill(
                    batch,
                    count,
                    lambda: tuple(
                        self._rng.randrange(n) if self._rng.random() < self.step else c
                        for c, n in zip(best, self.choices)
                    ),
                )
            self._fill_random(batch, count)
            return batch

    check_strategy(HillClimb)
    check_strategy(HillClimb, choices=CHOICES, options={"population": 8, "generations": 3})


class OneAtATime(Strategy):
    """A third-party strategy whose budget is its own ``steps`` option, one candidate per ask."""

    name = "one-at-a-time"

    def __init__(self, choices, constraint, seed, *, steps: int = 5):
        super().__init__(choices, constraint, seed)
        self.budget, self.batch_size = steps, 1
        self._rng, self._asked, self._pending = random.Random(seed), set(), False

    @property
    def finished(self):
        return len(self._asked) >= self.budget and not self._pending

    def ask(self):
        while True:
            arch = tuple(self._rng.randrange(n) for n in self.choices)
            if self.constraint(arch) and arch not in self._asked:
                self._asked.add(arch)
                self._pending = True
                return [arch]

    def tell(self, results):
        self._pending = False


class SizedOneAtATime(OneAtATime):
    @classmethod
    def options_for_budget(cls, budget, batch_size=None):
        return {"steps": budget}


@pytest.mark.parametrize(("budget", "batch", "expected"), [(24, 8, (8, 3)), (24, 5, (24, 1)), (7, None, (7, 1))])
def test_batch_strategies_state_the_options_of_a_budget(budget, batch, expected):
    for cls in STRATEGIES:
        options = cls.options_for_budget(budget, batch)
        assert (options["population"], options["generations"]) == expected
        strategy = cls(CHOICES, in_window, 0, **options)
        assert strategy.budget == budget and strategy.batch_size == expected[0]


def test_a_comparison_search_is_sized_in_the_strategy_s_own_terms(monkeypatch):
    real_get = registry.get
    plugin = {"one-at-a-time": SizedOneAtATime}
    monkeypatch.setattr(registry, "get", lambda kind, name: plugin.get(name) or real_get(kind, name))
    search = SearchConfig(strategy="evolution", strategy_options={"population": 6, "top_k": 2, "generations": 4})
    assert budget_matched_options(CHOICES, search, "one-at-a-time", "evolution", seed=0) == {"steps": 24}
    assert budget_matched_options(CHOICES, search, "random", "evolution", seed=0) == {"population": 6, "generations": 4}


def test_a_strategy_without_options_for_budget_says_it_cannot_be_sized():
    with pytest.raises(NasEngineError, match="strategy 'one-at-a-time' cannot be sized to a budget of 24 candidates"):
        OneAtATime.options_for_budget(24)


class StillMutation(BatchStrategy):
    """An evolution whose mutation never changes anything: every proposal after the first ask is a repeat."""

    name = "still"

    def _propose(self, count):
        batch: list[Arch] = []
        if self._scores:
            best = max(self._scores, key=self._scores.get)
            self._fill(batch, count, lambda: best)
        self._fill_random(batch, count)
        return batch


def test_a_batch_filled_at_random_because_own_proposals_ran_dry_is_said(capsys):
    strategy = StillMutation(CHOICES, in_window, 0, population=4, generations=3, max_tries=20)
    drive(strategy, ones)
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("warning") == 2 and "strategy 'still', ask 2: 4 of 4 candidates were drawn uniformly at" in out
    assert "as its own proposals ran dry (20 draws in a row were repeats or broke the constraint)" in out
    assert strategy.random_fills == 8
    drive(make(EvolutionStrategy, population=4, generations=3), ones)  # a mutation that works: nothing to say
    assert "warning" not in capsys.readouterr().out


def test_the_conformance_check_refuses_a_strategy_whose_proposals_run_dry(capsys):
    from nasengine.testing import check_strategy

    with pytest.raises(NasEngineError, match=r"strategy 'still': its own proposals ran dry in a space of 4\*\*20"):
        check_strategy(StillMutation, options={"population": 4, "generations": 3, "max_tries": 20})
    assert "warning" not in capsys.readouterr().out  # the check says it, once, in its own words
