"""Streaming protocols of the node agent's API: the WebSocket channel protocol
(exec/attach), SPDY/3.1 framing (port-forward, and exec/attach over plain SPDY), and the
sessions built on them."""
