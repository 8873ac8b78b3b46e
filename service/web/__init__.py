"""The people's side: the JSON API (/api), the console (/console) and the alert links (/l/<token>)."""
