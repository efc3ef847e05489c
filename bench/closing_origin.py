"""An origin that answers HTTP/1.1 without `Connection: close` and closes after each response,
as many dev servers do. Every request gets 1 KiB. Usage: closing_origin.py PORT"""
import socket
import sys
import threading

BODY = b"x" * 1024


def serve(conn):
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))


def main(port):
    listener = socket.create_server(("127.0.0.1", port), backlog=512)
    print("listening %d" % port, flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]))
