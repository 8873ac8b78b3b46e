"""`textback demo seed`: a realistic, deterministic history for a fresh machine, made by the real service.

history.py draws what happens (calls, replies, the team's texts and outcomes, when) from a seed, touching no
database; seed.py plays it through the real webhooks and the leads API of an in-process app in dry-run, with the
process clock moved to each moment, and refuses a database that holds leads it did not make.
"""
