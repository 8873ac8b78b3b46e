/* textback console: small progressive enhancements over server-rendered pages (no framework, no build).
 *  - sign-in: posts JSON to the auth API (phone -> code -> session), then goes on to the page asked for;
 *  - live updates: polls the page's HTML fragment every few seconds, swaps the parts that changed and
 *    announces new leads and new texts through the page's aria-live region;
 *  - forms: a second click while a form is being sent does nothing.
 * Everything else (reading, replying, calling, outcomes) is plain HTML forms that work without this file.
 */
(function () {
  "use strict";

  var POLL_MS = 3000;

  function announce(text) {
    var region = document.getElementById("announce");
    if (!region || !text) return;
    region.textContent = "";
    // A fresh text node after a tick, so screen readers announce a repeat of the same words too.
    window.setTimeout(function () { region.textContent = text; }, 50);
  }

  /* ---------- sign-in ---------- */

  function normalizePhone(value) {
    var digits = value.replace(/[^\d+]/g, "");
    if (/^\d{10}$/.test(digits)) return "+1" + digits;
    if (/^1\d{10}$/.test(digits)) return "+" + digits;
    return digits;
  }

  function postJSON(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body)
    });
  }

  function errorText(response, fallback) {
    return response.json().then(function (body) {
      return (body && body.error) ? body.error.charAt(0).toUpperCase() + body.error.slice(1) + "." : fallback;
    }, function () { return fallback; });
  }

  function setupSignIn() {
    var request = document.getElementById("code-request");
    var enter = document.getElementById("code-enter");
    if (!request || !enter) return;
    var phoneInput = document.getElementById("phone");
    var codeInput = document.getElementById("code");
    var status = document.getElementById("login-status");
    var error = document.getElementById("login-error");
    var next = request.getAttribute("data-next") || "/console";
    var phone = "";

    function showError(text) {
      error.textContent = text;
      error.hidden = !text;
    }
    function busy(form, on) {
      Array.prototype.forEach.call(form.querySelectorAll("button[type=submit]"), function (b) { b.disabled = on; });
      form.setAttribute("aria-busy", on ? "true" : "false");
    }
    function offline() { showError("Could not reach textback. Check your connection and try again."); }

    request.addEventListener("submit", function (event) {
      event.preventDefault();
      showError("");
      phone = normalizePhone(phoneInput.value);
      if (!/^\+\d{8,15}$/.test(phone)) {
        showError("Enter your mobile number, like +1 415 555 0123.");
        phoneInput.focus();
        return;
      }
      busy(request, true);
      postJSON("/api/auth/code", { phone: phone }).then(function (response) {
        busy(request, false);
        if (response.status === 202) {
          request.hidden = true;
          enter.hidden = false;
          status.textContent = "If " + phone + " belongs to a textback user, a code is on its way to it by text.";
          codeInput.value = "";
          codeInput.focus();
        } else if (response.status === 429) {
          showError("Too many codes asked for. Wait a few minutes, then try again.");
        } else {
          errorText(response, "That did not work. Check the number and try again.").then(showError);
        }
      }, function () { busy(request, false); offline(); });
    });

    enter.addEventListener("submit", function (event) {
      event.preventDefault();
      showError("");
      var code = codeInput.value.replace(/\D/g, "");
      if (code.length !== 6) {
        showError("Enter the 6 digits of the code we texted you.");
        codeInput.focus();
        return;
      }
      busy(enter, true);
      postJSON("/api/auth/session", { phone: phone, code: code }).then(function (response) {
        if (response.ok) {
          status.textContent = "Signed in. Opening your inbox…";
          window.location.assign(next);
          return;
        }
        busy(enter, false);
        var fallback = response.status === 429 ? "Too many tries. Ask for a new code in a few minutes."
          : "That code did not work. Check it, or ask for a new one.";
        errorText(response, fallback).then(function (text) { showError(text); codeInput.focus(); });
      }, function () { busy(enter, false); offline(); });
    });

    document.getElementById("code-again").addEventListener("click", function () {
      enter.hidden = true;
      request.hidden = false;
      status.textContent = "";
      showError("");
      phoneInput.focus();
    });
  }

  /* ---------- live updates ---------- */

  function leadsIn(part) {
    var seen = {};
    Array.prototype.forEach.call(part.querySelectorAll("[data-lead-id]"), function (row) {
      seen[row.getAttribute("data-lead-id")] = row;
    });
    return seen;
  }

  function inboxNews(oldPart, newPart) {
    var before = leadsIn(oldPart);
    var news = [];
    Array.prototype.forEach.call(newPart.querySelectorAll("[data-lead-id]"), function (row) {
      var old = before[row.getAttribute("data-lead-id")];
      if (!old) {
        news.push("New: " + row.getAttribute("data-announce"));
      } else if (old.getAttribute("data-version") !== row.getAttribute("data-version")) {
        news.push("Updated: " + row.getAttribute("data-announce"));
      }
    });
    return news.join(". ");
  }

  function leadNews(oldPart, newPart) {
    var before = parseInt(oldPart.getAttribute("data-inbound") || "0", 10);
    var after = parseInt(newPart.getAttribute("data-inbound") || "0", 10);
    if (after > before) return after - before === 1 ? "New text from the borrower." : "New texts from the borrower.";
    return "";
  }

  function focusKey(part) {
    var active = document.activeElement;
    if (!active || !part.contains(active)) return null;
    return active.getAttribute("href");
  }

  function swap(part, fresh) {
    var key = focusKey(part);
    part.innerHTML = fresh.innerHTML;
    Array.prototype.forEach.call(fresh.attributes, function (a) { part.setAttribute(a.name, a.value); });
    if (key) {
      var again = part.querySelector('[href="' + key.replace(/"/g, "") + '"]');
      if (again) again.focus();
    }
  }

  function setupLive() {
    var url = document.body.getAttribute("data-live-url");
    var kind = document.body.getAttribute("data-live-kind");
    if (!url || !window.fetch) return;
    var etag = null;
    var timer = null;
    var stopped = false;

    function schedule() {
      if (!stopped) timer = window.setTimeout(poll, POLL_MS);
    }

    function signedOut() {
      stopped = true;
      var main = document.getElementById("main");
      var note = document.createElement("p");
      note.className = "notice error";
      note.setAttribute("role", "alert");
      note.innerHTML = 'You are signed out. <a href="/console/login?next=' +
        encodeURIComponent(window.location.pathname + window.location.search) + '">Sign in again</a>.';
      main.insertBefore(note, main.firstChild);
    }

    function apply(html) {
      var holder = document.createElement("template");
      holder.innerHTML = html;
      var news = [];
      Array.prototype.forEach.call(holder.content.querySelectorAll("[data-part]"), function (fresh) {
        var name = fresh.getAttribute("data-part");
        var part = document.querySelector('[data-part="' + name + '"]');
        if (!part || part.innerHTML.trim() === fresh.innerHTML.trim()) return;
        var said = kind === "inbox" ? inboxNews(part, fresh) : (name === "conversation" ? leadNews(part, fresh) : "");
        if (said) news.push(said);
        swap(part, fresh);
      });
      if (news.length) announce(news.join(" "));
    }

    function poll() {
      timer = null;
      if (document.hidden) { schedule(); return; }
      var headers = { "Accept": "text/html" };
      if (etag) headers["If-None-Match"] = etag;
      fetch(url, { credentials: "same-origin", headers: headers, cache: "no-store" }).then(function (response) {
        if (response.status === 401) { signedOut(); return null; }
        if (response.status === 304 || !response.ok) return null;
        etag = response.headers.get("ETag");
        return response.text();
      }).then(function (html) {
        if (html) apply(html);
        schedule();
      }, function () { schedule(); });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !timer && !stopped) poll();
    });
    schedule();
  }

  /* ---------- forms ---------- */

  function setupForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (event.defaultPrevented || form.id === "code-request" || form.id === "code-enter") return;
      if (form.getAttribute("data-sending") === "true") { event.preventDefault(); return; }
      form.setAttribute("data-sending", "true");
      form.setAttribute("aria-busy", "true");
    });
    // Back from the browser's cache: the form may be sent again.
    window.addEventListener("pageshow", function () {
      Array.prototype.forEach.call(document.querySelectorAll("form[data-sending]"), function (form) {
        form.removeAttribute("data-sending");
        form.setAttribute("aria-busy", "false");
      });
    });
  }

  function start() {
    setupSignIn();
    setupLive();
    setupForms();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}());
