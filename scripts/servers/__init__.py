"""The local stack's servers, one module per server (``scripts/stack.py`` is their command line).

common (paths, errors, ports), install (apt, Maven, setup commands), process
(the Server base class: pid files, start, health wait, stop); kafka, postgres,
mongodb, redis, opensearch (the single profile); kafka_cluster, redis_cluster
(the cluster profile's nodes and cluster state); profiles (which servers each
profile runs, the app's settings); control (node control for fault tests).
"""
