"""bench/RESULTS.md from one run's figures. Everything below the NOTES marker in the old file (the
hand-written record of what each change bought) is kept as it was."""
import os

from scenarios import CLIENTS, LABEL

NOTES = "<!-- Hand-written notes below this line are kept when the harness rewrites the file. -->"

TARGETS = {  # figure: (scenario key, field, comparison, bound, text)
    "keep-alive 1 KiB rps": ("keepalive", "rps", "ratio>=", 0.20, "≥ 0.20 × direct"),
    "`Connection: close` rps": ("close", "rps", "ratio>=", 0.15, "≥ 0.15 × direct"),
    "64 MiB download MB/s": ("download", "mbps", "ratio>=", 0.40, "≥ 0.40 × direct"),
    "keep-alive p99 latency": ("keepalive", "p99", "<=", 10.0, "≤ 10 ms"),
}


def _ratio(results, key, field, which):
    direct = results[key, "direct"][field]
    return results[key, which][field] / direct if direct else float("nan")


def _verdict(ok):
    return "**met**" if ok else "**not met**"


def targets_table(results, memory):
    rows = ["| figure | target | " + " | ".join(LABEL[c] for c in CLIENTS) + " |",
            "|---|---|" + "---|" * len(CLIENTS)]
    for figure, (key, field, how, bound, text) in TARGETS.items():
        cells = []
        for which in CLIENTS:
            if how == "ratio>=":
                value = _ratio(results, key, field, which)
                cells.append("%.3f × %s" % (value, _verdict(value >= bound)))
            else:
                value = results[key, which][field]
                cells.append("%.2f ms %s" % (value, _verdict(value <= bound)))
        rows.append("| %s | %s | %s |" % (figure, text, " | ".join(cells)))
    errors = {which: sum(r.get("errors", 0) for (k, w), r in results.items() if w == which) for which in CLIENTS}
    rows.append("| errors, all scenarios | 0 | " + " | ".join(
        "%d %s" % (errors[w], _verdict(errors[w] == 0)) for w in CLIENTS) + " |")
    rows.append("| server RSS idle | ≤ 40 MB | %.1f MB %s (one server for both) | |"
                % (memory["idle"], _verdict(memory["idle"] <= 40)))
    rows.append("| server RSS, %d tunnels × %d idle sockets | ≤ 250 MB | %.1f MB %s | |"
                % (memory["tunnels"], memory["sockets"] // max(memory["tunnels"], 1), memory["loaded"],
                   _verdict(memory["loaded"] <= 250)))
    return rows


def scenario_table(results):
    rows = ["| scenario | path | rate | p50 | p99 | errors | × direct |", "|---|---|---|---|---|---|---|"]
    specs = [("keepalive", "1 KiB GET, 50 keep-alive connections", "rps", "req/s"),
             ("close", "1 KiB GET, `Connection: close`, 50 connections", "rps", "req/s"),
             ("download", "64 MiB download (byte-exact checked)", "mbps", "MB/s"),
             ("upload", "64 MiB upload (byte-exact checked)", "mbps", "MB/s"),
             ("websocket", "WebSocket echo, 64 B messages, one at a time", "msgs", "msg/s")]
    for key, title, field, unit in specs:
        for which in ("direct",) + CLIENTS:
            r = results[key, which]
            exact = "" if "exact" not in r else (" ✓ exact" if r["exact"] else " ✗ CORRUPT")
            ratio = "1" if which == "direct" else "%.3f" % _ratio(results, key, field, which)
            rows.append("| %s | %s | %.1f %s%s | %s | %s | %d | %s |" % (
                title, LABEL[which], r[field], unit, exact, _ms(r.get("p50")), _ms(r.get("p99")),
                r.get("errors", 0), ratio))
    return rows


def _ms(value):
    return "–" if value is None else "%.2f ms" % value


def write(path, meta, results, memory, first, floor):
    lines = [
        "# Benchmark results",
        "",
        "Written by the harness (`make bench`, which runs `%s`) on %s." % (meta["command"], meta["date"]),
        "Machine: %s, %d cores. Python %s, gevent %s, %s, %s, Node %s. All traffic on 127.0.0.1;"
        % (meta["cpu"], meta["cores"], meta["python"], meta["gevent"], meta["nginx"], meta["wrk"], meta["node"]),
        "each wrk run lasts %d s with one wrk thread. Ratios compare with direct nginx in the same run."
        % meta["seconds"],
        "",
        "## Targets", "",
        *targets_table(results, memory),
        "", "## Every scenario", "",
        *scenario_table(results),
        "", "50 keep-alive visitor connections share each tunnel's 10 tunnel sockets in the keep-alive rows.",
        "", "## Time from `?new` to the first proxied byte", "",
        "- server alone (harness does `?new`, opens one tunnel socket, answers one request): "
        "p50 %.2f ms, p99 %.2f ms" % (first["server"]["p50"], first["server"]["p99"]),
    ]
    for kind in CLIENTS:
        lines.append("- %s: from starting the client process %.0f ms (of which %.0f ms after it printed "
                     "its URL)" % (LABEL[kind], first[kind]["total"], first[kind]["after_url"]))
    lines += ["", "## Memory", "",
              "- server RSS: %.1f MB idle; %.1f MB with %d tunnels and %d idle tunnel sockets "
              "(%.1f KB per socket)" % (memory["idle"], memory["loaded"], memory["tunnels"], memory["sockets"],
                                        (memory["loaded"] - memory["idle"]) * 1024 / max(memory["sockets"], 1)),
              "- client RSS after the load: " + ", ".join(
                  "%s %.1f MB" % (("our client" if k == "python" else "npm lt"), v) for k, v in first["rss"].items()),
              "", "## The floor of a gevent design", "",
              "Two gevent processes that only splice bytes (no HTTP parsing, a connection per visitor "
              "connection) in the same three-hop chain: %.0f req/s, p99 %.2f ms (%.3f × direct)."
              % (floor["rps"], floor["p99"], floor["rps"] / results["keepalive", "direct"]["rps"]),
              "", NOTES]
    lines.append(_old_notes(path))
    with open(path, "w") as out:
        out.write("\n".join(lines).rstrip() + "\n")


def _old_notes(path):
    if not os.path.exists(path):
        return ""
    with open(path) as old:
        text = old.read()
    return text.split(NOTES, 1)[1].strip("\n") if NOTES in text else ""
