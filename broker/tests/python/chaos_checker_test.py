#!/usr/bin/env python3
"""Unit tests of chaos_checker.py on crafted histories: a clean history
passes, and each anomaly kind, planted alone, is reported (and only it).
Run by broker/tests/chaos.rs (`python3 -m unittest chaos_checker_test`
in this directory)."""

import unittest

from chaos_checker import Producer, check


def report(tag, i, p, o, error=None):
    return {"i": i, "p": p, "o": o, "k": f"{tag}-key-{i % 50}", "v": f"{tag}-{i}", "e": error}


def read(tag, i, p, o):
    return {"p": p, "o": o, "k": f"{tag}-key-{i % 50}", "v": f"{tag}-{i}"}


class History:
    """Producer a sends a-0 .. a-9 to partition 0 (key a-key-i, offsets
    0..9), all acknowledged, the final read holds exactly them."""

    def __init__(self):
        self.reports = [report("a", i, 0, i) for i in range(10)]
        self.sent = 10
        self.final = [read("a", i, 0, i) for i in range(10)]
        self.live = [read("a", i, 0, i) for i in range(5)]

    def check(self):
        lines = self.reports + [{"done": True, "sent": self.sent, "unreported": 0}]
        return check([Producer("a", lines)], self.final, self.live)


def found(result):
    return {kind for kind, a in result["anomalies"].items() if a["count"] > 0}


class CheckerTest(unittest.TestCase):
    def test_a_clean_history_has_no_anomaly(self):
        result = History().check()
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["counts"]["acked"], 10)
        self.assertEqual(result["counts"]["indeterminate"], 0)

    def test_an_acknowledged_record_missing_from_the_final_read_is_lost(self):
        h = History()
        del h.final[7]
        result = h.check()
        self.assertEqual(found(result), {"lost"})
        self.assertEqual(result["anomalies"]["lost"]["examples"][0]["v"], "a-7")

    def test_a_value_at_two_offsets_is_duplicated(self):
        h = History()
        h.final.append(read("a", 3, 0, 10))
        self.assertEqual(found(h.check()), {"duplicated"})

    def test_an_acknowledged_record_read_at_another_offset_moved(self):
        h = History()
        # a-9 acknowledged at 9, read at 10 (offset 9 holds nothing).
        h.final[9] = read("a", 9, 0, 10)
        self.assertEqual(found(h.check()), {"moved"})

    def test_two_acknowledged_values_of_a_key_out_of_send_order_are_reordered(self):
        h = History()
        # Key a-key-i: one per value; put two values on one key by
        # crafting the key (same producer, same partition).
        h.reports = [dict(r, k="a-key-0") for r in h.reports]
        h.final = [dict(r, k="a-key-0") for r in h.final]
        h.live = []
        # a-4 and a-5 swapped in the log (and acknowledged so).
        h.reports[4]["o"], h.reports[5]["o"] = 5, 4
        h.final[4], h.final[5] = dict(h.final[5], o=4), dict(h.final[4], o=5)
        result = h.check()
        self.assertEqual(found(result), {"reordered"})
        self.assertEqual(result["anomalies"]["reordered"]["count"], 1)

    def test_a_record_read_but_never_sent_is_a_phantom(self):
        h = History()
        h.final.append(read("a", 10, 0, 10))  # a-10: only 10 were sent
        self.assertEqual(found(h.check()), {"phantom"})
        h = History()
        h.live.append(read("zz", 1, 0, 11))
        self.assertEqual(found(h.check()), {"phantom", "unstable_read"})

    def test_a_live_read_the_final_log_does_not_hold_is_unstable(self):
        h = History()
        h.live.append(read("a", 42, 0, 3))  # never sent either
        h.live[-1]["v"] = "a-2"  # a-2 was sent, but sits at offset 2
        self.assertEqual(found(h.check()), {"unstable_read"})

    def test_unacknowledged_records_are_indeterminate_whether_or_not_they_show_up(self):
        h = History()
        h.reports[8]["e"] = "_MSG_TIMED_OUT: timed out"
        h.reports[8]["o"] = -1
        del h.reports[9]  # no report at all
        del h.final[9]  # and never written
        result = h.check()
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["counts"]["indeterminate"], 2)
        self.assertEqual(result["counts"]["indeterminate_read"], 1)
        self.assertEqual(result["counts"]["indeterminate_absent"], 1)

    def test_an_acknowledgement_without_offset_must_still_be_read(self):
        h = History()
        h.reports[6]["o"] = None  # delivered, offset unknown
        result = h.check()
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["counts"]["acked_without_offset"], 1)
        del h.final[6]
        self.assertEqual(found(h.check()), {"lost"})

    def test_a_failed_record_that_was_written_twice_is_still_duplicated(self):
        h = History()
        h.reports[8]["e"] = "_MSG_TIMED_OUT: timed out"
        h.final.append(read("a", 8, 0, 10))
        self.assertEqual(found(h.check()), {"duplicated"})


if __name__ == "__main__":
    unittest.main()
