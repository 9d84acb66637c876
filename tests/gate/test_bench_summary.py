"""`bench gate`'s summary of judged candidates: pure functions over hand-made rows."""
import json

import pytest

from bench.gate import JUDGED, _judged_before, merge_gate_results, summarise


def row(name, health, promotable, purchases, bait, by_cut, covers=True):
    """A judged candidate: its truth against production's (100 purchases per 1000, 10% bait)."""
    return {"name": name, "status": "pass" if promotable else "block", "promotable": promotable,
            "decided_by": [] if promotable else ["served"],
            "truth": {"health": health, "candidate": {"purchases_per_1000": purchases, "bait_share": bait},
                      "production": {"purchases_per_1000": 100.0, "bait_share": 0.10}},
            "served": {"bait_upper_by_cut": by_cut}, "offpolicy": {"covers_truth": covers}}


def test_the_bait_proxy_is_scored_at_every_cut_and_both_aa_retrains_count_pure_function():
    rows = [
        row("loop", "healthy", True, 100.0, 0.10, {"0.5": 3.5, "0.7": 1.0}),
        row("a/a", "healthy", True, 99.0, 0.10, {"0.5": 0.5, "0.7": 0.2}),
        row("a/a-2", "neither", False, 95.0, 0.10, {"0.5": 0.5, "0.7": 0.2}),
        row("click-only", "harmful", False, 95.0, 0.20, {"0.5": 9.0, "0.7": 2.5}),  # harmful by its bait alone
        row("ctr-preset", "harmful", False, 50.0, 0.40, {"0.5": 9.0, "0.7": 1.0}),  # harmful by its purchases
    ]
    summary = summarise(rows, bait_points=3.0)
    sizing = summary["bait_proxy_by_cut"]
    assert sizing["healthy"] == 2 and sizing["harmful_by_bait_alone"] == 1
    assert sizing["cuts"] == {"0.5": {"false_blocks": 1, "misses_of_bait": 0},
                              "0.7": {"false_blocks": 0, "misses_of_bait": 1}}
    assert summary["aa_candidates"] == 2 and summary["aa_pass_rate"] == 0.5
    assert summary["false_block_rate"] == 0 and summary["miss_rate"] == 0


def test_a_judged_candidate_is_taken_again_only_under_the_same_gate_settings(tmp_path):
    """A stopped `bench gate --keep` run resumes: a row judged before is reused when the gate's settings are the
    ones it was judged under, and judged anew otherwise (or when its file is torn)."""
    under = {"audit": {"offpolicy_clip": 20.0}, "serving": {"serving_floor": 0.05}}
    assert _judged_before(tmp_path, under) is None
    (tmp_path / JUDGED).write_text(json.dumps({"under": under, "row": {"name": "loop", "promotable": True}}))
    assert _judged_before(tmp_path, under) == {"name": "loop", "promotable": True}
    assert _judged_before(tmp_path, {**under, "audit": {"offpolicy_clip": None}}) is None
    (tmp_path / JUDGED).write_text('{"under": ')
    assert _judged_before(tmp_path, under) is None


def test_runs_judged_under_one_setting_merge_and_others_do_not():
    """`bench gate-merge`: one run per seed, summarised again as one; a run judged under other margins, or a seed
    judged twice, is refused with what differs."""
    def part(seed, clip, rows):
        return {"settings": {"seeds": [seed], "rounds": 7, "requests_per_round": 20000,
                             "audit": {"offpolicy_clip": clip, "served_bait_points": 3.0}, "serving": {}},
                "environment": {"commit": f"c{seed}"}, "results": {"candidates": rows}}

    healthy = row("loop", "healthy", True, 100, 0.10, {})
    harmful = row("click-only", "harmful", False, 80, 0.20, {})
    merged = merge_gate_results([part(7, 20, [healthy]), part(8, 20, [harmful])])
    assert merged["settings"]["seeds"] == [7, 8]
    assert (merged["summary"]["healthy"], merged["summary"]["harmful"]) == (1, 1)
    assert merged["summary"]["false_block_rate"] == 0 and merged["summary"]["miss_rate"] == 0
    with pytest.raises(ValueError, match="offpolicy_clip"):
        merge_gate_results([part(7, 20, [healthy]), part(8, None, [harmful])])
    with pytest.raises(ValueError, match="more than one run"):
        merge_gate_results([part(7, 20, [healthy]), part(7, 20, [harmful])])


def test_an_inconclusive_candidate_is_scored_by_its_canary_pure_function():
    """A candidate the audit left inconclusive is promoted or held by its canary: the false blocks and misses
    count the end of it, and the audit's own count stays beside them."""
    healthy_canaried = {**row("loop", "healthy", False, 100.0, 0.10, {}), "status": "inconclusive",
                        "decided_by": ["off-policy"], "canary": {"promote": True, "status": "pass"},
                        "final_promotable": True}
    harmful_canaried = {**row("click-only", "harmful", False, 80.0, 0.10, {}), "status": "inconclusive",
                        "decided_by": ["off-policy"], "canary": {"promote": True, "status": "pass"},
                        "final_promotable": True}
    summary = summarise([healthy_canaried, harmful_canaried, row("a/a", "healthy", True, 100.0, 0.10, {})], 3.0)
    assert summary["false_block_rate"] == 0 and summary["offline"]["false_blocks"] == 1
    assert summary["miss_rate"] == 1 and summary["offline"]["misses"] == 0
    assert summary["misses_decided_by"] == {"off-policy": 1, "canary": 1}
    assert summary["canaries"]["opened"] == 2
    assert summary["canaries"]["healthy_promoted"] == 1 and summary["canaries"]["harmful_promoted"] == 1
