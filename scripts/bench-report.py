#!/usr/bin/env python3
"""Turns the rows the benchmarks recorded (SB_BENCH_ROWS, one JSON object per line) into one
table: printed, and written into docs/benchmarks.md between the suite markers.

Usage: bench-report.py ROWS.jsonl [docs/benchmarks.md] [--seconds N]
"""

import json
import sys
import time

BEGIN = "<!-- suite:begin (written by scripts/bench suite) -->"
END = "<!-- suite:end -->"


def num(v, unit):
    if v is None:
        return "—"
    if unit == "msg/s":
        return f"{v:,.0f}"
    return f"{v:,.1f} {unit}"


def lat(f):
    if f.get("p50_us") is None:
        return "—"
    return f"{f['p50_us']:,.0f} / {f['p99_us']:,.0f}"


def ratio(sb, peer, unit):
    if not peer or not peer["figure"]["value"]:
        return "—"
    r = sb["value"] / peer["figure"]["value"]
    # For sizes and times less is better: say how many times the peer's figure it is.
    return f"{r:.2f}×" if unit == "msg/s" else f"{r:.2f}× (less is better)"


def table(rows):
    out = ["| group | scenario | Switchboard | p50 / p99 µs | peer | peer figure | p50 / p99 µs | ratio | router RSS |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sb, peer, unit = r["switchboard"], r.get("peer"), r["unit"]
        rss = f"{r['router_rss_mib']:.0f} MiB" if r.get("router_rss_mib") is not None else "—"
        out.append("| " + " | ".join([
            r["group"], r["scenario"], num(sb["value"], unit), lat(sb),
            peer["name"] if peer else "—", num(peer["figure"]["value"], unit) if peer else "—",
            lat(peer["figure"]) if peer else "—", ratio(sb, peer, unit), rss]) + " |")
    return "\n".join(out)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = None
    if "--seconds" in sys.argv:
        seconds = sys.argv[sys.argv.index("--seconds") + 1]
        args = [a for a in args if a != seconds]
    rows = [json.loads(l) for l in open(args[0]) if l.strip()]
    t = table(rows)
    print(t)
    if len(args) > 1:
        doc = open(args[1]).read()
        when = time.strftime("%Y-%m-%d")
        took = f" in {int(seconds) // 60} min {int(seconds) % 60} s" if seconds else ""
        section = (f"{BEGIN}\n\n`scripts/bench suite` on {when}{took} (every scenario below, "
                   f"release build, peers on the same machine, one run; msg/s unless a unit is "
                   f"given; ratio = Switchboard ÷ peer). The sections after this table describe "
                   f"each scenario and its goal.\n\n{t}\n\n{END}")
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
        else:
            first = doc.index("\n## ")
            doc = doc[:first] + "\n\n## All scenarios, one run\n\n" + section + "\n" + doc[first:]
        open(args[1], "w").write(doc)


main()
