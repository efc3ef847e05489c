"""TLS ended by our server itself against nginx ending it in front of our plain server (issue 16):
keep-alive and `Connection: close`, side by side, alternating, with the CPU each process spent.

Both paths end at the same nginx origin through our client (`--inspect=off`); the certificate
is a throwaway from openssl. wrk does not verify it (the tests verify certificates; here the
cost is measured). Usage: .venv/bin/python bench/tls.py [--seconds 5] [--rounds 2]
"""
from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenarios  # noqa: E402
import tools  # noqa: E402

NGINX_TLS = """worker_processes 1;
error_log {out}/nginx-tls-error.log warn;
pid {out}/nginx-tls.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream tunnels {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://tunnels;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto https;
      proxy_buffering off;
    }}
  }}
}}
"""


def certificate():
    """A throwaway self-signed certificate for localhost and *.localhost: (cert, key) paths."""
    cert, key = os.path.join(tools.OUT, "tls-bench.pem"), os.path.join(tools.OUT, "tls-bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,DNS:*.localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def start_nginx_tls(upstream, cert, key):
    port = tools.free_port()
    conf = os.path.join(tools.OUT, "nginx-tls.conf")
    with open(conf, "w") as out:
        out.write(NGINX_TLS.format(out=tools.OUT, port=port, upstream=upstream, cert=cert, key=key))
    proc = tools.Proc("nginx-tls", ["nginx", "-c", conf, "-p", tools.OUT, "-g", "daemon off;"])
    tools.wait_listening(port)
    return proc, port


def tunnel(procs, server_port, nginx_port, name, cert=None):
    """Our client for `name`; with `cert`, asking our TLS server over HTTPS and trusting it."""
    argv = scenarios.client_argv("python", server_port, nginx_port, name)
    env = None
    if cert is not None:
        argv[argv.index("-h") + 1] = "https://localhost:%d" % server_port
        env = {"SSL_CERT_FILE": cert}
    client = tools.Proc("tls-client-" + name, argv, env=env)
    procs.append(client)
    client.wait_for(r"your url is")
    return client


def wait_sockets(port, name, cert=None, count=10):
    """The tunnel has its sockets, asked over HTTPS (verified) when `cert` is given."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if cert is None:
            status, body = scenarios.api_get(port, "/api/tunnels/%s/status" % name)
        else:
            conn = http.client.HTTPSConnection("localhost", port, timeout=10,
                                               context=ssl.create_default_context(cafile=cert))
            conn.request("GET", "/api/tunnels/%s/status" % name, headers={"Host": "localhost:%d" % port})
            answer = conn.getresponse()
            status, body = answer.status, answer.read()
            conn.close()
        if status == 200 and json.loads(body)["connected_sockets"] >= count:
            return
        time.sleep(0.05)
    raise RuntimeError("tunnel %s never had %d sockets" % (name, count))


def main(argv=None):
    args = tools.prepare_run(__doc__, argv, seconds=5, rounds=2)
    cert, key = certificate()
    procs = []
    try:
        origin, origin_port = tools.start_nginx(tools.prepare_site())
        procs.append(origin)
        builtin, builtin_port = scenarios.start_server("tls-builtin", extra=("--tls-cert", cert, "--tls-key", key))
        plain, plain_port = scenarios.start_server("tls-plain")
        procs += [builtin, plain]
        front, front_port = start_nginx_tls(plain_port, cert, key)
        procs.append(front)
        clients = {"builtin": tunnel(procs, builtin_port, origin_port, "bench-tls-builtin", cert),
                   "nginx": tunnel(procs, plain_port, origin_port, "bench-tls-nginx")}
        wait_sockets(builtin_port, "bench-tls-builtin", cert)
        wait_sockets(plain_port, "bench-tls-nginx")
        paths = {"built-in TLS": ("builtin", builtin_port, {"server": builtin.pid}),
                 "nginx TLS in front": ("nginx", front_port, {"server": plain.pid, "nginx": front.pid})}
        for number in range(1, args.rounds + 1):
            for mode, headers in (("keep-alive", ()), ("close", ("Connection: close",))):
                order = list(paths.items()) if number % 2 else list(paths.items())[::-1]
                for label, (kind, port, pids) in order:
                    run = tools.run_wrk_cpu("https://127.0.0.1:%d/1k" % port, "bench-tls-%s.localhost" % kind,
                                            args.seconds, 50, dict(pids, client=clients[kind].pid), headers)
                    print("round %d, %-10s %-19s %7.0f req/s, p99 %6.2f ms, errors %d; CPU us/request: %s"
                          % (number, mode, label, run["rps"], run["p99"], run["errors"],
                             ", ".join("%s %.1f" % (name, sum(pair)) for name, pair in run["cpu"].items())),
                          flush=True)
    finally:
        tools.stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
