"""The herd's benchmark harness: ``python -m bench`` or ``herd bench``.

It starts everything it measures on loopback (the five servers, the gateway, and baselines
that do the least possible work on the same traffic), runs fixed workloads against the herd
and the baselines in alternating rounds, and reports every headline figure as a ratio to its
baseline from the same run, so that it holds on a shared, noisy machine.
"""
