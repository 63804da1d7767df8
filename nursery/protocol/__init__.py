"""The wire protocols of nursery's websockets, shared by the server and the clients.

Nothing here does I/O or imports server code, so ``nursery.client`` (and any other client)
can import it alone:

    close_codes   every close code either side sends, and ``ProtocolError``
    sync          /ws: the sync protocol's messages (hello, welcome, change, reset, ...)
    graphql_ws    /graphql: the ``graphql-transport-ws`` protocol's messages
"""
