"""The server's parts: the public port (front), each tunnel and its sockets, the registry of
tunnels, the API, who may create tunnels, and root.py, which composes them."""
