"""Moving bytes between sockets, for both ends: buffered reads, framed body copies, splices,
one request forwarded over one connection, and the bounds on every wait."""
