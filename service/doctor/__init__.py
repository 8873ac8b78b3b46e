"""`textback doctor`: one checklist of what a deployment needs, each line ok / warning / failed with the fix.

core (Check, Status, the Doctor context the checks share), local (settings, public URL, database, brokers file,
policies, LLM endpoint), twilio_checks (credentials, each broker number's webhooks, A2P 10DLC), run (the ordered
list of checks, running them, rendering the checklist).
"""
