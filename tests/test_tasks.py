"""The task interface and the synthetic tasks: memorize, arithmetic, XML."""

from __future__ import annotations

import re

import numpy as np
import pytest

from archsearch.errors import TaskError
from archsearch.tasks import DEFAULT_LENGTH, Difficulty, Stream, get_task, parse_arithmetic, task_names

SYNTHETIC = ["memorize", "arithmetic", "xml"]
BUNDLED = ["ptb-mini", "chorales"]


def test_task_names_and_unknown_task() -> None:
    names = task_names()
    for name in [*SYNTHETIC, *BUNDLED, "ptb", "nottingham", "piano-midi", "jsb", "musedata"]:
        assert name in names
    with pytest.raises(TaskError, match="unknown task 'nope'.*arithmetic"):
        get_task("nope")


@pytest.mark.parametrize("name", SYNTHETIC + BUNDLED)
def test_interface_attributes(name: str) -> None:
    task = get_task(name)
    assert task.name == name
    assert task.kind in ("symbols", "piano")
    assert task.num_inputs == task.num_outputs > 1
    assert task.metric in ("accuracy", "exp_neg_nll", "nll")
    assert task.synthetic is (name in SYNTHETIC)
    assert task.param_budgets and all(isinstance(b, int) for b in task.param_budgets)


def test_param_budgets_follow_the_paper() -> None:
    assert get_task("arithmetic").param_budgets == (250_000, 1_000_000)
    assert get_task("xml").param_budgets == (250_000, 1_000_000)
    assert get_task("memorize").param_budgets == (25_000,)
    assert get_task("ptb-mini").param_budgets == (5_000_000,)
    assert get_task("chorales").param_budgets == (100_000, 1_000_000)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_stream_shapes_and_shift(name: str) -> None:
    task = get_task(name)
    s = task.stream("train", seed=3, length=5000)
    assert isinstance(s, Stream) and len(s) == 5000
    assert s.inputs.dtype == s.targets.dtype == np.int64 and s.mask.dtype == np.float32
    assert s.inputs.shape == s.targets.shape == s.mask.shape == (5000,)
    assert 0 <= s.inputs.min() and s.inputs.max() < task.num_inputs
    np.testing.assert_array_equal(s.targets[:-1], s.inputs[1:])
    assert set(np.unique(s.mask).tolist()) <= {0.0, 1.0} and s.mask.sum() > 0
    assert len(task.stream("valid", seed=3)) == DEFAULT_LENGTH


@pytest.mark.parametrize("name", SYNTHETIC)
def test_determinism_prefixes_and_independent_splits(name: str) -> None:
    task = get_task(name)
    a = task.stream("train", seed=7, length=3000)
    b = get_task(name).stream("train", seed=7, length=3000)
    longer = task.stream("train", seed=7, length=4000)
    for part in ("inputs", "targets", "mask"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
        np.testing.assert_array_equal(getattr(a, part), getattr(longer, part)[:3000])
    others = [task.stream(split, seed=7, length=3000).inputs for split in ("valid", "test")]
    others.append(task.stream("train", seed=8, length=3000).inputs)
    for other in others:
        assert (other != a.inputs).mean() > 0.3


@pytest.mark.parametrize("name", SYNTHETIC)
def test_bad_split_and_length(name: str) -> None:
    task = get_task(name)
    with pytest.raises(TaskError, match="unknown split"):
        task.stream("dev", seed=0)  # type: ignore[arg-type]
    for bad in (0, -5, 2.5):
        with pytest.raises(TaskError, match="positive integer"):
            task.stream("train", seed=0, length=bad)  # type: ignore[arg-type]


def _instances(task_name: str, length: int, terminator: str) -> tuple[str, np.ndarray]:
    """The decoded stream text (inputs plus the last target) and the scored-target flags."""
    task = get_task(task_name)
    s = task.stream("test", seed=11, length=length)
    text = task.decode(np.append(s.inputs, s.targets[-1]))
    flags = np.concatenate([[0.0], s.mask])  # flags[j]: character j is a scored target
    assert text.count(terminator) > 10
    return text, flags


# ------------------------------------------------------------------ memorize
def test_memorize_targets_reproduce_inputs_and_mask_covers_them() -> None:
    text, flags = _instances("memorize", 6000, ".")
    assert re.fullmatch(r"([a-z]{5}=[a-z]{5}\.)*[a-z=.]*", text)
    expected = np.zeros(len(text))
    for m in re.finditer(r"([a-z]{5})=([a-z]{5})\.", text):
        assert m[1] == m[2]
        expected[m.start(2) : m.end(2)] = 1.0
    np.testing.assert_array_equal(flags[: expected.size], expected)
    assert flags.sum() == 5 * text.count(".")
    task = get_task("memorize")
    s = task.stream("train", seed=0, length=600)
    for i in np.flatnonzero(s.mask):  # the reproduced symbol equals the one read 6 steps before
        assert s.targets[i] == s.inputs[i - 5] and s.targets[i] < 26


@pytest.mark.parametrize("seed", [0, 7])
def test_memorize_draws_its_instances_at_once_as_one_at_a_time(seed: int) -> None:
    """The vectorized draw gives the very ids, spans and generator state of one ``instance`` after another, so
    the filter's data did not change when it was vectorized."""
    from archsearch.tasks._chars import CharTask

    task = get_task("memorize")
    fast, slow = np.random.default_rng(seed), np.random.default_rng(seed)
    for got, want in zip(task.instances(fast, 300), CharTask.instances(task, slow, 300)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    assert fast.random() == slow.random()


# ------------------------------------------------------------------ arithmetic
def test_paper_example_parses() -> None:
    for text in ("3e36d9-h1h39f94eeh43keg3c=-13991064", "3e36d9-h1h39f94eeh43keg3c=-13991064."):
        p = parse_arithmetic(text)
        assert (p.a, p.op, p.b, p.answer) == (3369, "-", 13994433, -13991064)
    with pytest.raises(TaskError, match="wrong answer"):
        parse_arithmetic("3e36d9-h1h39f94eeh43keg3c=-13991065")
    with pytest.raises(TaskError, match="not an arithmetic instance"):
        parse_arithmetic("12+=3.")


def test_arithmetic_answers_are_right_and_scored() -> None:
    task = get_task("arithmetic")
    assert task.num_inputs == 40
    text, flags = _instances("arithmetic", 40_000, ".")
    instances = text.split(".")[:-1]  # the last piece may be cut
    assert len(instances) > 500
    start = 0
    signs = {"a": 0, "b": 0}
    for inst in instances:
        p = parse_arithmetic(inst)
        assert abs(p.a) < 10**8 and abs(p.b) < 10**8
        signs["a"] += p.a < 0
        signs["b"] += p.b < 0
        answer_at = start + inst.index("=") + 1
        end = start + len(inst) + 1  # including "."
        assert flags[start:answer_at].sum() == 0
        assert flags[answer_at:end].all(), inst
        assert text[answer_at : end - 1] == str(p.answer)
        start = end
    answers = "".join(i.split("=")[1] for i in instances)
    assert not re.search(r"[a-z]", answers)  # no distractors in answers
    assert re.search(r"[a-z]", instances[0].split("=")[0]) or re.search(r"[a-z]", instances[1])
    assert 0.3 < signs["a"] / len(instances) < 0.7 and 0.3 < signs["b"] / len(instances) < 0.7


def test_arithmetic_draws_follow_the_stated_distribution() -> None:
    """Operands: digit count uniform in 1..8, negative half the time; + and - equally often; one distractor per gap
    on average (geometric). The instances are drawn many at a time: a shorter stream is a prefix of a longer one."""
    task = get_task("arithmetic")
    long = task.stream("train", seed=11, length=200_000)
    short = task.stream("train", seed=11, length=1_000)
    np.testing.assert_array_equal(short.inputs, long.inputs[:1000])
    np.testing.assert_array_equal(short.mask, long.mask[:1000])
    questions = [q.split("=")[0] for q in task.decode(long.inputs).split(".")[1:-1]]
    cores = [re.sub("[a-z]", "", q) for q in questions]
    operands = [int(x) for core in cores for x in re.fullmatch(r"(-?\d+)[+-](-?\d+)", core).groups()]
    digits = np.bincount([len(str(abs(x))) for x in operands], minlength=9)[1:]
    assert len(operands) > 8000 and (np.abs(digits / len(operands) - 1 / 8) < 0.02).all(), digits
    assert abs(np.mean([x < 0 for x in operands]) - 0.5) < 0.03
    plus = [re.fullmatch(r"-?\d+([+-])-?\d+", core)[1] == "+" for core in cores]
    assert abs(np.mean(plus) - 0.5) < 0.03
    letters = sum(len(q) - len(core) for q, core in zip(questions, cores))
    assert abs(letters / sum(map(len, cores)) - 1.0) < 0.05  # as many gaps as question characters (with "=")


# ------------------------------------------------------------------ xml
def test_xml_is_well_nested() -> None:
    task = get_task("xml")
    assert task.num_inputs == 31
    text, flags = _instances("xml", 30_000, "\n")
    assert flags[1:].all()
    tokens = re.findall(r"<(/?)([a-z]+)>([ \n])", text)
    rebuilt = "".join(f"<{c}{n}>{s}" for c, n, s in tokens)
    assert text.startswith(rebuilt) and len(text) - len(rebuilt) < 15  # only tags and separators
    stack: list[str] = []
    docs = 0  # closings back to the top level
    for closing, name, sep in tokens:
        assert 2 <= len(name) <= 10
        if closing:
            assert stack and stack.pop() == name
            docs += not stack
        else:
            stack.append(name)
        assert len(stack) <= 50
    assert docs > 20


# ------------------------------------------------------------------ difficulty (set by a training scale)
def test_paper_difficulty_is_the_default_stream() -> None:
    for name in ("arithmetic", "xml"):
        task = get_task(name)
        same = task.with_difficulty(Difficulty()).stream("valid", seed=5, length=3000)
        np.testing.assert_array_equal(same.inputs, task.stream("valid", seed=5, length=3000).inputs)
    memorize = get_task("memorize")
    assert memorize.with_difficulty(Difficulty(arithmetic_max_digits=1)) is memorize


def test_easier_arithmetic_has_short_operands_and_no_distractors() -> None:
    task = get_task("arithmetic").with_difficulty(Difficulty(arithmetic_max_digits=2, arithmetic_distractor_mean=0.0))
    s = task.stream("train", seed=3, length=5000)
    text = task.decode(s.inputs)
    instances = text.split(".")[1:-1]
    assert len(instances) > 200 and not re.search("[a-z]", text)
    problems = [parse_arithmetic(inst) for inst in instances]
    assert max(max(abs(p.a), abs(p.b)) for p in problems) >= 10 and all(abs(p.a) < 100 > abs(p.b) for p in problems)
    noisy = get_task("arithmetic").with_difficulty(Difficulty(arithmetic_max_digits=2, arithmetic_distractor_mean=3.0))
    questions = [q.split("=")[0] for q in noisy.decode(noisy.stream("train", seed=3, length=20_000).inputs).split(".")[1:-1]]
    letters = sum(len(re.findall("[a-z]", q)) for q in questions)
    n_gaps = sum(len(re.sub("[a-z]", "", q)) for q in questions)  # a gap after every question character but the
    # first, and one before "=": as many gaps as question characters
    assert 2.5 < letters / n_gaps < 3.5


def test_easier_xml_is_shallow_with_short_tags() -> None:
    task = get_task("xml").with_difficulty(Difficulty(xml_max_iterations=4, xml_max_tag_length=3))
    text = task.decode(task.stream("train", seed=2, length=20_000).inputs)
    tokens = re.findall(r"<(/?)([a-z]+)>", text)
    assert len(tokens) > 1000 and {len(name) for _, name in tokens} == {2, 3}
    depth = peak = 0
    for closing, _ in tokens[10:]:
        depth += -1 if closing else 1
        peak = max(peak, depth)
    assert peak <= 4


def test_difficulty_out_of_range() -> None:
    for bad in ({"arithmetic_max_digits": 0}, {"arithmetic_max_digits": 19}, {"arithmetic_distractor_mean": -1.0},
                {"xml_max_tag_length": 1}):
        with pytest.raises(TaskError, match="difficulty|distractor"):
            Difficulty(**bad)


@pytest.mark.parametrize("name", ["arithmetic", "xml", "memorize"])
def test_a_task_reads_exactly_its_declared_difficulty_fields(name: str) -> None:
    """Changing a Difficulty field the task declares changes its data; changing any other field does not (an
    experiment's stored runs of the task stay valid when another task's difficulty changes)."""
    from dataclasses import fields, replace

    base = Difficulty(arithmetic_max_digits=2, arithmetic_distractor_mean=1.0, xml_max_iterations=4, xml_max_tag_length=4)
    changed = {"arithmetic_max_digits": 3, "arithmetic_distractor_mean": 2.0, "xml_max_iterations": 6,
               "xml_max_tag_length": 6}
    task = get_task(name)

    def data(difficulty: Difficulty) -> np.ndarray:
        return task.with_difficulty(difficulty).stream("train", seed=4, length=3_000).inputs

    assert set(task.difficulty_fields) <= {f.name for f in fields(Difficulty)}
    for field in fields(Difficulty):
        differs = not np.array_equal(data(base), data(replace(base, **{field.name: changed[field.name]})))
        assert differs == (field.name in task.difficulty_fields), field.name
