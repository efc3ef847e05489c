"""The pure PROXY-line module (wire/proxy_line.py): lines made and read back, fed whole and a
byte at a time, and every malformed line refused."""
import pytest

from localtunnel.wire.proxy_line import MAX_LINE, BadProxyLine, proxy_line, split_proxy_line


def read_back(data):
    """What split_proxy_line says once the bytes arrived one at a time: it must ask for more
    until the line is whole, then give the same answer as for the whole buffer."""
    whole = split_proxy_line(data)
    for end in range(len(data) + 1):
        split = split_proxy_line(data[:end])
        if split is not None:
            assert split[0] == whole[0] and data[:end].endswith(b"\r\n") and data[end:] == whole[1][len(split[1]):]
            return whole
    return None


@pytest.mark.parametrize("source, destination, line", [
    (("203.0.113.5", 51000), ("10.0.0.2", 80), b"PROXY TCP4 203.0.113.5 10.0.0.2 51000 80\r\n"),
    (("2001:db8::5", 51000), ("2001:db8::2", 443), b"PROXY TCP6 2001:db8::5 2001:db8::2 51000 443\r\n"),
    # Families must agree: a mixed pair says the destination is unknown.
    (("2001:db8::5", 1), ("10.0.0.2", 80), b"PROXY TCP6 2001:db8::5 :: 1 0\r\n"),
    (("203.0.113.5", 1), ("::1", 80), b"PROXY TCP4 203.0.113.5 0.0.0.0 1 0\r\n"),
])
def test_a_line_made_reads_back_as_its_source(source, destination, line):
    assert proxy_line(source, destination) == line
    assert read_back(line + b"GET / HTTP/1.1\r\n") == (source[0], b"GET / HTTP/1.1\r\n")


def test_the_longest_line_the_specification_allows_is_read():
    address = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = proxy_line((address, 65535), (address, 65535))
    assert len(line) <= MAX_LINE
    assert read_back(line) == (address, b"")


def test_unknown_names_no_source():
    assert read_back(b"PROXY UNKNOWN\r\nGET") == (None, b"GET")
    assert read_back(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == (None, b"")


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n",
    b"PROXY\r\n",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY " + b"x" * MAX_LINE,
])
def test_anything_else_is_refused(data):
    with pytest.raises(BadProxyLine):
        read_back(data)
