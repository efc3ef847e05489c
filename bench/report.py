"""bench/RESULTS.md from one run's figures. Everything below the NOTES marker in the old file (the
hand-written record of what each change bought) is kept as it was."""
import os

from scenarios import CLIENTS, FLOORS, LABEL
import users

NOTES = "<!-- Hand-written notes below this line are kept when the harness rewrites the file. -->"

TARGETS = {  # figure: (scenario key, field, comparison, bound, text)
    "keep-alive 1 KiB rps": ("keepalive", "rps", "ratio>=", 0.20, "≥ 0.20 × direct"),
    "`Connection: close` rps": ("close", "rps", "ratio>=", 0.15, "≥ 0.15 × direct"),
    "64 MiB download MB/s": ("download", "mbps", "ratio>=", 0.40, "≥ 0.40 × direct"),
    "keep-alive p99 latency": ("keepalive", "p99", "<=", 10.0, "≤ 10 ms"),
}


def _ratio(results, key, field, which):
    if field == "rps" and "ratio" in results[key, which]:
        return results[key, which]["ratio"]    # paired with direct in its own round
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


def users_lines(results, node_missing):
    """The section on stock clients at default flags and origins as shipped (bench/users.py)."""
    lines = ["## As users run it", "",
             "Stock clients at their default flags (`lt --host URL --port N`, our `lt_client.py -h URL -p N`, "
             "@n8n/localtunnel opened at its defaults by tests/node/n8n-lt.js), nginx as Debian ships it "
             "(`sendfile on; tcp_nopush on`: head and body leave in two writes) and an origin that answers "
             "HTTP/1.1 and closes after each response without saying so (bench/closing_origin.py). "
             "× direct compares with the same origin reached directly, × Node with the Node.js localtunnel "
             "server + npm lt in the same scenario, same run.", ""]
    if node_missing:
        lines += ["No Node server column in this run: %s." % node_missing, ""]
    lines += ["### Targets (issue 12)", "", "| figure | target | measured |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % row for row in users_targets(results)]
    lines += ["", "### Every figure", "",
              "| scenario | path | rate | p50 | p99 | errors of requests | × direct | × Node |",
              "|---|---|---|---|---|---|---|---|"]
    for (scenario, path), r in results.items():
        field, unit = ("mbps", "MB/s") if scenario == "download" else ("rps", "req/s")
        exact = "" if "exact" not in r else (" ✓ exact" if r["exact"] else " ✗ CORRUPT")
        lines.append("| %s | %s | %.1f %s%s | %s | %s | %d of %d | %s | %s |" % (
            users.SCENARIOS[scenario][0], users.LABEL[path], r[field], unit, exact, _ms(r["p50"]), _ms(r["p99"]),
            r["errors"], r["requests"], _times(results, scenario, "direct", path, field),
            _times(results, scenario, "node+npm", path, field)))
    return lines


def _times(results, scenario, base, path, field):
    """`path`'s figure as a multiple of `base`'s in the same scenario; – for the base itself, for
    direct (the origin is not a tunnel), and when either is absent."""
    if path in (base, "direct") or (scenario, base) not in results or not results[scenario, base][field]:
        return "–"
    return "%.3f" % (results[scenario, path][field] / results[scenario, base][field])


def users_targets(results):
    """(figure, target, measured with a verdict) for each of issue 12's targets."""
    def get(scenario, path, field):
        return results.get((scenario, path), {}).get(field)

    def ratio(scenario, path, base, field="rps"):
        mine, theirs = get(scenario, path, field), get(scenario, base, field)
        return None if mine is None or not theirs else mine / theirs

    def cell(value, ok, text):
        return "not measured (see above)" if value is None else "%s %s" % (text % value, _verdict(ok(value)))

    rows = []
    for scenario, what in (("keepalive", "keep-alive"), ("close", "`Connection: close`")):
        value = ratio(scenario, "ours+npm", "node+npm")
        rows.append(("npm lt through our server, %s req/s" % what, "≥ 2 × the Node server",
                     cell(value, lambda v: v >= 2, "%.2f ×")))
    value = get("keepalive", "ours+npm", "p50")
    rows.append(("npm lt through our server, keep-alive p50", "≤ 5 ms", cell(value, lambda v: v <= 5, "%.2f ms")))
    for path in ("ours+npm", "ours+n8n", "ours+python"):
        value = get("one", path, "p50")
        rows.append(("one keep-alive visitor, split-write origin, median, %s" % users.PATHS[path][1], "≤ 2 ms",
                     cell(value, lambda v: v <= 2, "%.2f ms")))
    for scenario, path, least in (("closing-get", "ours+python", 600), ("closing-post", "ours+python", 600),
                                  ("closing-6", "ours+npm", 60)):
        r = results.get((scenario, path))
        text = None if r is None else "%d lost of %d %s" % (r["errors"], r["requests"], _verdict(
            r["errors"] == 0 and r["requests"] >= least))
        rows.append(("%s, %s" % (users.SCENARIOS[scenario][0], users.PATHS[path][1]),
                     "0 lost of ≥ %d" % least, text or "not measured"))
    for scenario, field, bound, text in (("keepalive", "rps", 0.20, "≥ 0.20 × direct"),
                                         ("close", "rps", 0.15, "≥ 0.15 × direct"),
                                         ("download", "mbps", 0.40, "≥ 0.40 × direct")):
        value = ratio(scenario, "ours+python", "direct", field)
        rows.append(("our pair, distro nginx, %s" % users.SCENARIOS[scenario][0], text,
                     cell(value, lambda v, b=bound: v >= b, "%.3f ×")))
    value = get("keepalive", "ours+python", "p99")
    rows.append(("our pair, distro nginx, keep-alive p99", "≤ 10 ms", cell(value, lambda v: v <= 10, "%.2f ms")))
    return rows


def write(path, meta, results, memory, first, users_results=None, node_missing=None):
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
        *rounds_lines(results),
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
                  "%s %.1f MB" % (LABEL[k], v) for k, v in first["rss"].items()),
              "", "## The request inspector's cost (issue 15)", "",
              *inspector_lines(results),
              "", "## The floors of a gevent design", "",
              *floor_lines(results), ""]
    if users_results is not None:
        lines += users_lines(users_results, node_missing) + [""]
    lines.append(NOTES)
    lines.append(_old_notes(path))
    with open(path, "w") as out:
        out.write("\n".join(lines).rstrip() + "\n")


def inspector_lines(results):
    """Keep-alive requests/s with our client's inspector on against off, round by round (each
    round ran both back to back); the target is at most 10% fewer."""
    pairs = [(on[0] / off[0]) for on, off in zip(results["keepalive", "inspected"]["rounds"],
                                                  results["keepalive", "python"]["rounds"])]
    median = sorted(pairs)[len(pairs) // 2]
    return ["Keep-alive requests/s through our client with the inspector on, as a share of the same with "
            "`--inspect=off`, in each round: %s; median %.3f (target at least 0.90: %s)."
            % (", ".join("%.3f" % pair for pair in pairs), median, _verdict(median >= 0.90))]


def rounds_lines(results):
    """The keep-alive rows are the median of several rounds; show every round, so the spread
    the machine adds is in plain sight."""
    first = results["keepalive", "direct"]
    lines = ["The keep-alive rows are the median round of %d; in each round every path (and the two "
             "floors below) ran back to back, and a ratio compares runs from the same round. Every "
             "round:" % len(first["rounds"]), ""]
    for which in ("direct",) + CLIENTS + FLOORS:
        rounds = results["keepalive", which]["rounds"]
        lines.append("- %s: %s" % (LABEL[which], "; ".join(
            ("p99 %.2f ms" % p99) if which == "direct" else ("%.3f × (p99 %.2f ms)" % (ratio, p99))
            for ratio, p99 in rounds)))
    return [""] + lines


def floor_lines(results):
    """Two measuring sticks in the same three-hop chain, and the CPU every process on each path
    spent per keep-alive request: where the time goes, in figures the harness takes itself."""
    splice, http = results["keepalive", "splice"], results["keepalive", "http"]
    lines = [
        "Run in the keep-alive rounds above, beside the real paths:",
        "",
        "- any design: two gevent processes that only splice bytes (no HTTP parsing, a connection "
        "per visitor connection; bench/splice_relay.py): %.0f req/s, p99 %.2f ms (%.3f × direct)."
        % (splice["rps"], splice["p99"], splice["ratio"]),
        "- this design: two gevent processes that do only the per-request work sharing tunnel "
        "sockets requires (find where each request and response ends, borrow one of 10 shared "
        "sockets per request; no routing, limits, errors or logs; bench/http_relay_floor.py): "
        "%.0f req/s, p99 %.2f ms (%.3f × direct)." % (http["rps"], http["p99"], http["ratio"]),
        "",
        "CPU per 1 KiB keep-alive request, user + system, in microseconds (from /proc around each "
        "wrk run of the median round; the server column is the process on the public port, the "
        "client column the one next to nginx):",
        "",
        "| path | req/s | × direct | server | client | nginx |",
        "|---|---|---|---|---|---|",
    ]
    for which in ("direct",) + CLIENTS + FLOORS:
        result = results["keepalive", which]
        cells = [_cpu_cell(result["cpu"].get(role)) for role in ("server", "client", "nginx")]
        lines.append("| %s | %.0f | %.3f | %s |" % (LABEL[which], result["rps"], result["ratio"], " | ".join(cells)))
    return lines


def _cpu_cell(pair):
    if pair is None:
        return "–"
    return "%.0f + %.0f = %.0f" % (pair[0], pair[1], pair[0] + pair[1])


def _old_notes(path):
    if not os.path.exists(path):
        return ""
    with open(path) as old:
        text = old.read()
    return text.split(NOTES, 1)[1].strip("\n") if NOTES in text else ""
