"""The quickstart's plain-words verdicts come from its numbers; the stay-at-first-box baseline."""
import numpy as np

from lorat_scale.quickstart import STAY, TRAINED, UNTRAINED, StayAtFirstBox, _verdict


def scores(trained: float, untrained: float, stay: float) -> dict:
    return {TRAINED: {"AUC": trained}, UNTRAINED: {"AUC": untrained}, STAY: {"AUC": stay}}


def test_verdict_follows_the_margin_over_the_better_baseline():
    assert _verdict(scores(40.0, 5.1, 29.9), seen=True).endswith("the assembled pipeline learned to track it")
    # 9.9 points over the better baseline (stay at the first box) is no clear gain
    v = _verdict(scores(39.8, 5.1, 29.9), seen=True)
    assert "no clear gain" in v and "AUC 39.8 vs 5.1 (untrained head) and 29.9 (stay at the first box)" in v
    assert "carries over to an unseen sequence" in _verdict(scores(30.0, 5.0, 19.0), seen=False)
    assert "do not make a general tracker" in _verdict(scores(30.0, 25.0, 19.0), seen=False)


def test_stay_at_first_box_reports_the_first_box_unchanged():
    t = StayAtFirstBox()
    first = np.array([1.0, 2.0, 30.0, 40.0])
    t.init(np.zeros((8, 8, 3), np.uint8), first)
    first[0] = 99.0  # the caller's array may change; the baseline kept its own copy
    for _ in range(3):
        box, score = t.track(np.zeros((8, 8, 3), np.uint8))
        np.testing.assert_array_equal(box, [1.0, 2.0, 30.0, 40.0])
        assert score == 1.0
