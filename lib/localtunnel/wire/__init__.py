"""The pure wire: HTTP/1.1 heads and bodies, and the localtunnel protocol's names, ids and
answers. Bytes and values in, bytes and values out: nothing here touches a socket or a clock."""
