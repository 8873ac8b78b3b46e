"""A Twilio account behind respx for the doctor and `twilio configure` tests: the Accounts, IncomingPhoneNumbers
(list filtered by PhoneNumber, update), Messaging Services, their PhoneNumbers and Compliance/Usa2p endpoints,
answering with the JSON shapes of Twilio's API reference, checking HTTP basic auth like Twilio (401, error 20003)
and applying an update to the stored number, so a second run sees what the first one set."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

from tests.helpers import TWILIO_SID, TWILIO_TOKEN

API = f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_SID}"
MESSAGING = "https://messaging.twilio.com/v1"
RFC2822 = "Thu, 30 Jul 2015 20:00:00 +0000"
ISO = "2015-07-30T20:00:00Z"


def sid(prefix: str, n: int) -> str:
    return prefix + f"{n:032x}"


def number_json(phone: str, n: int, **fields: Any) -> dict[str, Any]:
    """An IncomingPhoneNumber as GET .../IncomingPhoneNumbers/PN....json returns it, webhooks unset."""
    pn = sid("PN", n)
    doc: dict[str, Any] = {
        "account_sid": TWILIO_SID, "address_requirements": "none", "address_sid": None, "api_version": "2010-04-01",
        "beta": False, "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": RFC2822, "date_updated": RFC2822, "emergency_status": "Inactive",
        "emergency_address_sid": None, "emergency_address_status": "unregistered", "friendly_name": phone,
        "identity_sid": None, "origin": "twilio", "phone_number": phone, "sid": pn,
        "sms_application_sid": "", "sms_fallback_method": "POST", "sms_fallback_url": "", "sms_method": "POST",
        "sms_url": "https://demo.twilio.com/welcome/sms/reply", "status_callback": "",
        "status_callback_method": "POST", "trunk_sid": None, "uri": f"/2010-04-01/Accounts/{TWILIO_SID}/"
        f"IncomingPhoneNumbers/{pn}.json", "voice_application_sid": "", "voice_caller_id_lookup": False,
        "voice_fallback_method": "POST", "voice_fallback_url": None, "voice_method": "POST",
        "voice_url": "https://demo.twilio.com/welcome/voice/", "voice_receive_mode": "voice", "bundle_sid": None,
        "status": "in-use",
        "subresource_uris": {"assigned_add_ons": f"/2010-04-01/Accounts/{TWILIO_SID}/IncomingPhoneNumbers/{pn}/"
                             "AssignedAddOns.json"},
    }
    doc.update(fields)
    return doc


def configured(public_url: str) -> dict[str, str]:
    """The webhook fields of a number `twilio configure` has set up for `public_url`."""
    return {"voice_url": f"{public_url}/twilio/voice", "voice_fallback_url": f"{public_url}/twilio/voice/fallback",
            "status_callback": f"{public_url}/twilio/voice/status", "sms_url": f"{public_url}/twilio/sms",
            "sms_fallback_url": f"{public_url}/twilio/sms/fallback"}


def service_json(n: int, *, name: str = "textback", inbound_request_url: str | None = None,
                 use_inbound_webhook_on_number: bool = True) -> dict[str, Any]:
    mg = sid("MG", n)
    return {
        "account_sid": TWILIO_SID, "area_code_geomatch": True, "date_created": ISO, "date_updated": ISO,
        "fallback_method": "POST", "fallback_to_long_code": True, "fallback_url": None, "friendly_name": name,
        "inbound_method": "POST", "inbound_request_url": inbound_request_url, "mms_converter": True,
        "scan_message_content": "inherit", "smart_encoding": True, "status_callback": None, "sticky_sender": True,
        "sid": mg, "synchronous_validation": True, "url": f"{MESSAGING}/Services/{mg}", "usecase": "customer_care",
        "us_app_to_person_registered": False, "use_inbound_webhook_on_number": use_inbound_webhook_on_number,
        "validity_period": 14400,
        "links": {"phone_numbers": f"{MESSAGING}/Services/{mg}/PhoneNumbers",
                  "us_app_to_person": f"{MESSAGING}/Services/{mg}/Compliance/Usa2p"},
    }


def campaign_json(service_sid: str, n: int, status: str) -> dict[str, Any]:
    qe = sid("QE", n)
    return {
        "sid": qe, "account_sid": TWILIO_SID, "brand_registration_sid": sid("BN", n),
        "messaging_service_sid": service_sid, "description": "Texts back callers the mortgage broker missed.",
        "message_samples": ["Hi, this is Dana Whitfield at Summit Home Loans (NMLS 123456). Sorry I missed your "
                            "call. Reply STOP to opt out."],
        "us_app_to_person_usecase": "CUSTOMER_CARE", "has_embedded_links": False, "has_embedded_phone": False,
        "subscriber_opt_in": False, "age_gated": False, "direct_lending": False, "campaign_status": status,
        "campaign_id": "CABC123", "is_externally_registered": False,
        "rate_limits": {"att": {"mps": 4, "msg_class": "T"}, "tmobile": {"brand_tier": "LOW"}},
        "message_flow": "The borrower called the broker's number and the call was missed.",
        "opt_in_message": None, "opt_out_message": None, "help_message": None, "opt_in_keywords": None,
        "opt_out_keywords": None, "help_keywords": None, "date_created": ISO, "date_updated": ISO,
        "url": f"{MESSAGING}/Services/{service_sid}/Compliance/Usa2p/{qe}", "mock": False, "errors": [],
    }


def _meta(key: str, url: str) -> dict[str, Any]:
    return {"page": 0, "page_size": 50, "first_page_url": url, "previous_page_url": None, "url": url,
            "next_page_url": None, "key": key}


@dataclass
class FakeAccount:
    """What the account holds; `install(router)` serves it. `posts` records each update's form, in order."""

    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    senders: dict[str, list[str]] = field(default_factory=dict)  # service sid -> phone numbers
    campaigns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # service sid -> campaigns
    status: str = "active"
    type: str = "Full"
    token: str = TWILIO_TOKEN
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def add_number(self, phone: str, **fields: Any) -> dict[str, Any]:
        self.numbers[phone] = number_json(phone, len(self.numbers) + 1, **fields)
        return self.numbers[phone]

    def add_service(self, phones: list[str], campaign_status: str | None = "VERIFIED", **kwargs: Any) -> str:
        service = service_json(len(self.services) + 1, **kwargs)
        self.services.append(service)
        self.senders[service["sid"]] = phones
        self.campaigns[service["sid"]] = (
            [] if campaign_status is None else [campaign_json(service["sid"], len(self.services), campaign_status)]
        )
        return str(service["sid"])

    def _authorized(self, request: httpx.Request) -> bool:
        expected = base64.b64encode(f"{TWILIO_SID}:{self.token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    def _answer(self, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        if not self._authorized(request):
            return httpx.Response(401, json={"code": 20003, "message": "Authenticate", "status": 401,
                                             "more_info": "https://www.twilio.com/docs/errors/20003"})
        return httpx.Response(200, json=body)

    def install(self, router: respx.MockRouter) -> None:
        router.get(f"{API}.json", name="account").mock(side_effect=lambda r: self._answer(r, {
            "auth_token": self.token, "date_created": RFC2822, "date_updated": RFC2822,
            "friendly_name": "Summit Home Loans", "owner_account_sid": TWILIO_SID, "sid": TWILIO_SID,
            "status": self.status, "type": self.type, "uri": f"/2010-04-01/Accounts/{TWILIO_SID}.json",
            "subresource_uris": {"incoming_phone_numbers": f"/2010-04-01/Accounts/{TWILIO_SID}/"
                                 "IncomingPhoneNumbers.json"}}))
        router.get(f"{API}/IncomingPhoneNumbers.json", name="numbers").mock(side_effect=self._list_numbers)
        router.post(url__regex=rf"{API}/IncomingPhoneNumbers/PN\w+\.json", name="update").mock(
            side_effect=self._update)
        router.get(f"{MESSAGING}/Services", name="services").mock(side_effect=lambda r: self._answer(
            r, {"services": self.services, "meta": _meta("services", f"{MESSAGING}/Services?PageSize=50&Page=0")}))
        router.get(url__regex=rf"{MESSAGING}/Services/MG\w+/PhoneNumbers", name="senders").mock(
            side_effect=self._list_senders)
        router.get(url__regex=rf"{MESSAGING}/Services/MG\w+/Compliance/Usa2p", name="usa2p").mock(
            side_effect=self._list_campaigns)

    def _list_numbers(self, request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get("PhoneNumber")
        found = [n for phone, n in self.numbers.items() if wanted in (None, phone)]
        uri = f"/2010-04-01/Accounts/{TWILIO_SID}/IncomingPhoneNumbers.json?PageSize=50&Page=0"
        return self._answer(request, {
            "end": max(len(found) - 1, 0), "first_page_uri": uri, "incoming_phone_numbers": found,
            "next_page_uri": None, "page": 0, "page_size": 50, "previous_page_uri": None, "start": 0, "uri": uri})

    def _update(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        pn = request.url.path.rsplit("/", 1)[1].removesuffix(".json")
        [number] = [n for n in self.numbers.values() if n["sid"] == pn]
        if self._authorized(request):
            self.posts.append((str(number["phone_number"]), form))
            for key, value in form.items():  # VoiceFallbackUrl -> voice_fallback_url
                number["".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_")] = value
        return self._answer(request, number)

    def _service_sid(self, request: httpx.Request) -> str:
        return request.url.path.split("/")[3]

    def _list_senders(self, request: httpx.Request) -> httpx.Response:
        mg = self._service_sid(request)
        senders = [{"account_sid": TWILIO_SID, "capabilities": ["MMS", "SMS", "Voice"], "country_code": "US",
                    "date_created": ISO, "date_updated": ISO, "phone_number": phone, "service_sid": mg,
                    "sid": self.numbers[phone]["sid"] if phone in self.numbers else sid("PN", 99),
                    "url": f"{MESSAGING}/Services/{mg}/PhoneNumbers/{sid('PN', i)}"}
                   for i, phone in enumerate(self.senders.get(mg, []))]
        return self._answer(request, {"phone_numbers": senders,
                                      "meta": _meta("phone_numbers", f"{MESSAGING}/Services/{mg}/PhoneNumbers")})

    def _list_campaigns(self, request: httpx.Request) -> httpx.Response:
        mg = self._service_sid(request)
        return self._answer(request, {"compliance": self.campaigns.get(mg, []), "meta": _meta(
            "compliance", f"{MESSAGING}/Services/{mg}/Compliance/Usa2p?PageSize=20&Page=0")})
