from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from pagoda_worker.engine.outputs import FinishReason
from pagoda_worker.engine.sampling_params import SamplingParams
from pagoda_worker.engine.stop_checker import StopChecker

EOS = 2


def checker(**params) -> StopChecker:
    return StopChecker(SamplingParams(**params), EOS)


def feed(stop_checker: StopChecker, deltas: list[str]) -> tuple[list[str], FinishReason | None]:
    """Shown pieces until a stop string appears; the held-back text is flushed otherwise."""
    shown = []
    for delta in deltas:
        text, reason = stop_checker.check_text(delta)
        shown.append(text)
        if reason is not None:
            return shown, reason
    shown.append(stop_checker.flush())
    return shown, None


def reference_cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text read one character at a time until some stop string is complete."""
    for end in range(1, len(text) + 1):
        starts = [end - len(s) for s in stops if text[:end].endswith(s)]
        if starts:
            return text[: min(starts)], True
    return text, False


def test_eos_stops_unless_ignored():
    assert checker().check_token(EOS, 1) is FinishReason.STOP
    assert checker(ignore_eos=True).check_token(EOS, 1) is None
    assert StopChecker(SamplingParams(), None).check_token(EOS, 1) is None


def test_any_of_several_eos_ids_stops():
    stop_checker = StopChecker(SamplingParams(), {EOS, 9})
    assert stop_checker.check_token(9, 1) is FinishReason.STOP
    assert stop_checker.check_token(EOS, 1) is FinishReason.STOP
    assert stop_checker.check_token(8, 1) is None
    ignoring = StopChecker(SamplingParams(ignore_eos=True, stop_token_ids=[8]), {EOS, 9})
    assert ignoring.check_token(9, 1) is None
    assert ignoring.check_token(8, 1) is FinishReason.STOP


def test_stop_token_ids_stop_even_when_eos_is_ignored():
    assert checker(stop_token_ids=[7], ignore_eos=True).check_token(7, 1) is FinishReason.STOP
    assert checker(stop_token_ids=[7]).check_token(8, 1) is None


def test_max_tokens_ends_with_length():
    stop_checker = checker(max_tokens=3)
    assert stop_checker.check_token(5, 2) is None
    assert stop_checker.check_token(5, 3) is FinishReason.LENGTH
    assert stop_checker.check_token(EOS, 3) is FinishReason.STOP


def test_text_passes_through_without_stop_strings():
    assert feed(checker(), ["hello", " world"]) == (["hello", " world", ""], None)


def test_a_stop_string_spanning_several_deltas_is_cut():
    stop_checker = checker(stop=["world"])
    shown, reason = feed(stop_checker, ["hello wo", "r", "ld and more"])
    assert shown == ["hello ", "", ""]
    assert reason is FinishReason.STOP
    assert stop_checker.stopped_by_string
    assert stop_checker.flush() == ""


def test_text_that_cannot_start_a_stop_string_is_shown_at_once():
    stop_checker = checker(stop=["world"])
    assert stop_checker.check_text("hello wo") == ("hello ", None)
    assert stop_checker.check_text("nder") == ("wonder", None)
    assert stop_checker.check_text("s w") == ("s ", None)
    assert stop_checker.flush() == "w"


def test_a_stop_string_at_the_very_start_leaves_no_text():
    assert feed(checker(stop=["The"]), ["The end"]) == ([""], FinishReason.STOP)


def test_the_first_complete_stop_string_wins():
    # "bc" is complete before "abcd" could be.
    assert feed(checker(stop=["abcd", "bc"]), ["xab", "cd"]) == (["x", "a"], FinishReason.STOP)
    assert feed(checker(stop=["abcd", "bc"]), ["xabcd"]) == (["xa"], FinishReason.STOP)


def test_of_stop_strings_complete_together_the_longest_is_cut():
    assert feed(checker(stop=["bc", "abc"]), ["xabc"]) == (["x"], FinishReason.STOP)


def test_any_of_several_stop_strings_stops():
    stops = ["\n\n", "END", "###"]
    assert feed(checker(stop=stops), ["one", " END two"]) == (["one", " "], FinishReason.STOP)
    assert feed(checker(stop=stops), ["one #", "## two"]) == (["one ", ""], FinishReason.STOP)


def test_held_text_is_flushed_when_the_completion_ends_otherwise():
    stop_checker = checker(stop=["world"])
    assert feed(stop_checker, ["hello wor"]) == (["hello ", "wor"], None)
    assert not stop_checker.stopped_by_string


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab c", max_size=30),
    stops=st.lists(st.text(alphabet="ab c", min_size=1, max_size=4), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 30), max_size=10),
)
def test_the_result_does_not_depend_on_how_the_text_is_split(text, stops, cuts):
    bounds = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    deltas = [text[a:b] for a, b in pairwise(bounds)]
    shown, reason = feed(checker(stop=stops), deltas)
    expected, stopped = reference_cut(text, stops)
    assert "".join(shown) == expected
    assert (reason is FinishReason.STOP) == stopped
