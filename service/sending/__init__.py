"""Guards before any automated text: quiet hours in the recipient's local time, and caps."""

from service.sending.policy import Caps, QuietHours, SendingPolicy, load_sending_policy, wall_time_to_utc
from service.sending.recipient import RecipientZone, recipient_zone

__all__ = [
    "Caps",
    "QuietHours",
    "RecipientZone",
    "SendingPolicy",
    "load_sending_policy",
    "recipient_zone",
    "wall_time_to_utc",
]
