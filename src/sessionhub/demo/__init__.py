"""`sessionhub demo` and the pieces the examples share with it.

`supervisor` runs the demo; `app` and `page` are the demo app; `balancer` is a
round-robin load balancer; `processes` and `redis` start and stop the child
processes (app instances, a private Redis) without leaving any behind.
"""
