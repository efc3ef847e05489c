"""`make demo`: a tunnel server, a tiny web service and a tunnel client, all on this machine.

Prints a http://<name>.localhost:<port> URL that opens in a browser (browsers resolve *.localhost
to this machine by themselves). Ctrl-C stops all three.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEMO_PAGE = """<!doctype html>
<title>Hello through localtunnel</title>
<h1>It works.</h1>
<p>This page is served by a tiny service on this machine, through the tunnel server and client
started by <code>make demo</code>.</p>
"""


def wait_for_line(proc, marker, seconds):
    """Read proc's output until a line contains `marker`; echo what it printed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        sys.stdout.write("  | " + line)
        if marker in line:
            return line
    raise SystemExit("demo: %s did not print %r within %d s" % (proc.args[1], marker, seconds))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="the tunnel server's public port")
    parser.add_argument("--service-port", type=int, default=3000, help="the demo service's port")
    args = parser.parse_args()

    site = os.path.join(ROOT, ".venv", "demo-site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "index.html"), "w") as page:
        page.write(DEMO_PAGE)

    py = sys.executable
    line_mode = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=ROOT)
    children = []
    try:
        print("demo: starting the tunnel server on port %d (domain localhost)" % args.port)
        server = subprocess.Popen([py, "-u", "lt_server.py", "--port", str(args.port), "--address", "127.0.0.1",
                                   "--domain", "localhost"], **line_mode)
        children.append(server)
        wait_for_line(server, "listening on", 15)
        print("demo: starting a tiny web service on 127.0.0.1:%d" % args.service_port)
        service = subprocess.Popen([py, "-u", "-m", "http.server", str(args.service_port), "--bind", "127.0.0.1",
                                    "--directory", site], **line_mode)
        children.append(service)
        wait_for_line(service, "Serving HTTP", 15)
        print("demo: starting the tunnel client")
        client = subprocess.Popen([py, "-u", "lt_client.py", "--host", "http://localhost:%d" % args.port,
                                   "--port", str(args.service_port), "--local-host", "127.0.0.1",
                                   "--print-requests"], **line_mode)
        children.append(client)
        url = wait_for_line(client, "your url is:", 15).split("your url is:")[1].strip()
        inspector = wait_for_line(client, "inspector:", 5).split("inspector:")[1].strip()
        print("\ndemo: open %s in a browser (or: curl %s), and watch each request at %s.\n"
              "Ctrl-C stops the demo.\n" % (url, url, inspector), flush=True)
        for line in client.stdout:
            sys.stdout.write("  | " + line)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
