#!/usr/bin/env python3
"""Jepsen-style checker of the nemesis harness (issue 15; run by
chaos.py after every run, unit-tested by chaos_checker_test.py, which
broker/tests/chaos.rs runs).

Input: the histories the clients recorded (replication_clients.py):
  * producers: every delivery report {"i", "p", "o", "k", "v", "e"} and the
    closing {"done": true, "sent": S}; producer TAG sent values TAG-0 ..
    TAG-(S-1), in that order, key TAG-key-(i % 50), so a value carries its
    per-key (and per-producer) sequence number i;
  * live reads: every record a consumer read while faults ran
    {"p", "o", "k", "v"};
  * the final read: every record of every partition from offset 0 to the
    high watermark, read after every fault healed and a quiet period.

Anomalies (each a list of examples in the result, and a count):
  * lost: acknowledged (no error) but absent from the final read;
  * duplicated: one value at two or more offsets of the final read;
  * moved: acknowledged at (partition, offset) but read elsewhere (a
    report without an offset, "o": null, is acknowledged but has no place
    to check: librdkafka delivers so the records of a failed request that
    a later request's acknowledgement proved written);
  * reordered: two acknowledged values of one key (one producer, one
    partition) in the log in the opposite of their send order;
  * phantom: read (live or final) but never sent;
  * unstable_read: read live at (partition, offset) but the final read has
    another value (or none) there: a consumer saw a record that the log
    later lost or replaced.
Counts (not anomalies): indeterminate records (sent, not acknowledged:
an error report or no report at all) that did / did not show up.
"""

import json
import re
import sys
from collections import defaultdict

VALUE = re.compile(r"^(?P<tag>.+)-(?P<i>\d+)$")
# Examples kept per anomaly kind in the result.
EXAMPLES_MAX = 20


def parse_value(value):
    """(tag, i) of a value TAG-i, or None."""
    match = VALUE.match(value or "")
    if match is None:
        return None
    return match.group("tag"), int(match.group("i"))


def load_jsonl(path):
    lines = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                lines.append(json.loads(line))
    return lines


class Producer:
    """One producer's history: what it sent and the reports it got."""

    def __init__(self, tag, lines):
        self.tag = tag
        self.sent = None
        self.acked = {}  # value -> (partition, offset)
        self.failed = {}  # value -> error
        for line in lines:
            if line.get("done"):
                self.sent = line["sent"]
            elif "v" in line:
                if line.get("e") is None:
                    self.acked[line["v"]] = (line["p"], line["o"])
                else:
                    self.failed[line["v"]] = line["e"]
        if self.sent is None:
            # No closing line (the producer died): every reported value was
            # sent, and maybe more; the highest reported index bounds it.
            indices = [parse_value(v)[1] for v in list(self.acked) + list(self.failed)]
            self.sent = max(indices) + 1 if indices else 0

    def values(self):
        return (f"{self.tag}-{i}" for i in range(self.sent))


def check(producers, final_read, live_reads=()):
    """The checker: `producers` a list of Producer, `final_read` and
    `live_reads` lists of {"p", "o", "k", "v"}. Returns a dict: "anomalies"
    {kind: {"count", "examples"}}, "counts", "ok" (no anomaly)."""
    sent = set()
    acked = {}
    for producer in producers:
        sent.update(producer.values())
        acked.update(producer.acked)

    anomalies = defaultdict(list)

    at = {}  # (p, o) -> value in the final read
    where = defaultdict(list)  # value -> [(p, o)] in the final read
    for r in final_read:
        at[(r["p"], r["o"])] = r["v"]
        where[r["v"]].append((r["p"], r["o"]))

    for value, (p, o) in sorted(acked.items(), key=lambda item: item[0]):
        places = where.get(value)
        if not places:
            anomalies["lost"].append({"v": value, "acked_at": [p, o]})
        elif o is not None and (p, o) not in places:
            anomalies["moved"].append({"v": value, "acked_at": [p, o], "read_at": places})

    for value, places in sorted(where.items()):
        if len(set(places)) > 1:
            anomalies["duplicated"].append({"v": value, "read_at": sorted(set(places))})

    for source, records in (("final", final_read), ("live", live_reads)):
        for r in records:
            if r["v"] not in sent:
                anomalies["phantom"].append({"v": r["v"], "read_at": [r["p"], r["o"]], "by": source})

    for r in live_reads:
        final = at.get((r["p"], r["o"]))
        if final != r["v"]:
            anomalies["unstable_read"].append(
                {"read_at": [r["p"], r["o"]], "live": r["v"], "final": final}
            )

    # Per key: the acknowledged values of one producer in one partition,
    # in offset order, must have increasing send indices.
    by_key = defaultdict(list)  # (partition, key, tag) -> [(offset, i, value)]
    for r in final_read:
        if r["v"] not in acked:
            continue
        parsed = parse_value(r["v"])
        if parsed is None:
            continue
        tag, i = parsed
        by_key[(r["p"], r["k"], tag)].append((r["o"], i, r["v"]))
    for (p, key, _tag), entries in sorted(by_key.items()):
        entries.sort()
        for (o1, i1, v1), (o2, i2, v2) in zip(entries, entries[1:]):
            if i2 < i1:
                anomalies["reordered"].append(
                    {"p": p, "k": key, "first": [o1, v1], "then": [o2, v2]}
                )

    indeterminate = sent - set(acked)
    showed_up = sum(1 for v in indeterminate if v in where)
    counts = {
        "sent": len(sent),
        "acked": len(acked),
        "acked_without_offset": sum(1 for _p, o in acked.values() if o is None),
        "failed_reports": sum(len(p.failed) for p in producers),
        "indeterminate": len(indeterminate),
        "indeterminate_read": showed_up,
        "indeterminate_absent": len(indeterminate) - showed_up,
        "final_read": len(final_read),
        "live_reads": len(live_reads),
    }
    kinds = ("lost", "duplicated", "moved", "reordered", "phantom", "unstable_read")
    result = {
        "anomalies": {
            kind: {"count": len(anomalies[kind]), "examples": anomalies[kind][:EXAMPLES_MAX]}
            for kind in kinds
        },
        "counts": counts,
    }
    result["ok"] = all(a["count"] == 0 for a in result["anomalies"].values())
    return result


def main():
    """chaos_checker.py FINAL.jsonl LIVE.jsonl TAG=PRODUCED.jsonl ...:
    prints the result as JSON; exit 0 when no anomaly, 1 otherwise."""
    if len(sys.argv) < 4:
        print(main.__doc__, file=sys.stderr)
        return 2
    final = [r for r in load_jsonl(sys.argv[1]) if "v" in r]
    live = [r for r in load_jsonl(sys.argv[2]) if "v" in r]
    producers = []
    for arg in sys.argv[3:]:
        tag, _, path = arg.partition("=")
        producers.append(Producer(tag, load_jsonl(path)))
    result = check(producers, final, live)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
