"""nursery's small Redis client, on Trio's own sockets (no asyncio loop under Trio).

    resp           RESP2 over TCP or TLS: ``Connection``, ``Client`` (scripts), ``Subscriber``
    resp_slots     Redis Cluster: key slots and the slot → master map (``Topology``)
    resp_cluster   ``ClusterClient``: commands routed by slot, MOVED/ASK followed
    subscription   ``ChannelSubscription``: one subscriber connection kept subscribed

It knows Redis, not nursery: the brokers (``nursery.pubsub``) and the shared rate limiter
(``nursery.ratelimit``) build on it and translate its errors into ours.
"""
