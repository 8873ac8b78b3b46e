"""Before any automated text: the gates (one verdict at queue and send time), quiet hours in the recipient's
local time, caps, and retry timing. Nothing is imported here: the quiet-hours policy pulls in phonenumbers and
the hours parser (~0.4 s to import), which only the code that reads the policy should pay for."""
