"""`make bench`: lead-poller's real code path against the sandbox, counted call by call.

`python -m benchmarks --help` lists the parameters. See README.md, "Performance".
"""
