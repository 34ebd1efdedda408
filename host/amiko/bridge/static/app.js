// The cashier page: keypad, live sale status over the websocket, today's payments
// (and the sign-in page's keypad, and the receipt's Print button).
"use strict";
(function () {
  var $ = function (id) { return document.getElementById(id); };

  // The sign-in page: an on-screen keypad for touch screens without a keyboard.
  if ($("login-keypad")) {
    $("login-keypad").addEventListener("click", function (ev) {
      var b = ev.target.closest("button[data-key]"), code = $("code");
      if (!b) return;
      var k = b.getAttribute("data-key");
      if (k === "C") code.value = "";
      else if (k === "back") code.value = code.value.slice(0, -1);
      else if (code.value.length < 200) code.value += k;
    });
    return;
  }

  // The printable receipt view only needs its Print button.
  if ($("print") && !$("keypad")) {
    $("print").addEventListener("click", function () { window.print(); });
    return;
  }

  var ws = null, retry = 500, digits = "", state = null, currency = "sat", links = {};
  var MAX_DIGITS = 16;

  function send(obj) {
    if (!ws || ws.readyState !== 1) { showError("not connected to the bridge: reconnecting…"); return; }
    ws.send(JSON.stringify(obj));
  }

  // -- errors stay until the cashier dismisses them (or the next sale starts)
  function showError(text) {
    $("banner-text").textContent = text;
    $("banner").hidden = false;
    document.body.classList.add("has-banner");
  }
  function clearError() {
    $("banner").hidden = true;
    document.body.classList.remove("has-banner");
  }
  $("banner-close").addEventListener("click", clearError);

  // -- keypad
  function renderAmount() {
    $("amount").textContent = digits ? Number(digits).toLocaleString("en-US") : "0";
    $("charge").disabled = !digits || Number(digits) <= 0;
  }
  function key(k) {
    if (k === "C") digits = "";
    else if (k === "back") digits = digits.slice(0, -1);
    else if (/^[0-9]$/.test(k) && digits.length < MAX_DIGITS && !(digits === "" && k === "0")) digits += k;
    renderAmount();
  }
  $("keypad").addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-key]");
    if (b) key(b.getAttribute("data-key"));
  });
  document.addEventListener("keydown", function (ev) {
    if (!state || state.phase !== "idle" || ev.target === $("receipt")) return;
    if (/^[0-9]$/.test(ev.key)) key(ev.key);
    else if (ev.key === "Backspace") key("back");
    else if (ev.key === "Enter" && !$("charge").disabled) charge();
  });
  function charge() {
    if (!digits) return;
    clearError();
    send({op: "sale", amount: Number(digits), receipt: $("receipt").value});
  }
  $("charge").addEventListener("click", charge);
  $("cancel").addEventListener("click", function () { send({op: "cancel"}); });
  $("dismiss").addEventListener("click", function () { clearError(); send({op: "dismiss"}); });

  // -- state
  var TITLES = {idle: "", preparing: "Preparing…", waiting: "Waiting for wallet", connected: "Wallet connected",
                confirming: "Confirming", routing: "Routing", locked: "Locked", paid: "Paid", cancelled: "Cancelled"};

  function render(s) {
    var prev = state;
    state = s;
    currency = s.currency || "sat";
    $("shop").textContent = s.shop_name || "Amiko Pay";
    document.title = (s.shop_name || "Amiko Pay") + " · " + (TITLES[s.phase] || "ready");
    $("unit").textContent = currency;
    if (!prev && s.default_receipt && !$("receipt").value) $("receipt").value = s.default_receipt;
    document.body.className = document.body.className.replace(/\bphase-\S+/g, "").trim() + " phase-" + s.phase;
    if (!$("banner").hidden) document.body.classList.add("has-banner");
    var idle = s.phase === "idle";
    $("entry").hidden = !idle;
    $("status").hidden = idle;
    $("node-problem").hidden = !s.node_problem;
    $("node-problem").textContent = s.node_problem ? "Shop node: " + s.node_problem : "";
    if (idle) {
      if (prev && prev.phase !== "idle") { digits = ""; renderAmount(); }
      if (s.notice) showError(s.notice);
      return;
    }
    var sale = s.sale || {};
    $("phase").textContent = TITLES[s.phase] || s.phase;
    $("sale-amount").textContent = sale.amount != null ? Number(sale.amount).toLocaleString("en-US") : "";
    $("sale-unit").textContent = currency;
    $("sale-receipt").textContent = sale.receipt || "";
    var final = s.phase === "paid" || s.phase === "cancelled";
    var wait = s.waiting_for || "";
    if (s.phase === "paid") wait = "Payment received";
    $("waiting-for").textContent = s.phase === "cancelled" ? "" : wait;
    var left = "";
    if (!final && s.seconds_left != null) left = "gives up in " + s.seconds_left + " s";
    if (s.phase === "paid" && sale.tap_to_paid_ms != null) left = "wallet to paid: " + (sale.tap_to_paid_ms / 1000).toFixed(1) + " s";
    $("countdown").textContent = left;
    $("reason").hidden = s.phase !== "cancelled";
    $("reason").textContent = s.phase === "cancelled" ? (sale.reason || "cancelled") : "";
    $("notice").hidden = !s.notice;
    $("notice").textContent = s.notice || "";
    $("url").textContent = sale.url && !final ? sale.url : "";
    if (sale.qr_svg) {
      if ($("qr").getAttribute("data-url") !== sale.url) {
        $("qr").innerHTML = sale.qr_svg;  // server-made SVG of the payment URL (segno)
        $("qr").setAttribute("data-url", sale.url);
      }
      $("qr").hidden = false;
    } else {
      $("qr").hidden = true;
    }
    $("paid-mark").hidden = s.phase !== "paid";
    $("cancel-mark").hidden = s.phase !== "cancelled";
    $("cancel").hidden = !s.cancellable;
    $("dismiss").hidden = !s.dismissable;
    var pl = $("print-link");
    pl.hidden = !(final && sale.txid && s.phase === "paid");
    if (sale.txid) pl.setAttribute("href", "/receipt/" + sale.txid);
    var cl = $("customer-link");
    cl.hidden = !(s.phase === "paid" && sale.txid && links[sale.txid]);
    if (!cl.hidden) cl.setAttribute("href", links[sale.txid]);
  }

  function renderPayments(rows) {
    var ul = $("payments");
    ul.textContent = "";
    var total = 0;
    links = {};
    if (!rows.length) {
      var li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No payments yet today";
      ul.appendChild(li);
    }
    rows.forEach(function (p) {
      if (p.state === "committed") total += p.amount;
      var li = document.createElement("li");
      li.setAttribute("data-txid", p.txid);
      li.setAttribute("data-state", p.state);
      var r1 = document.createElement("div");
      r1.className = "row1";
      var a = document.createElement("span");
      a.textContent = Number(p.amount).toLocaleString("en-US") + " " + currency;
      var st = document.createElement("span");
      st.className = "st-" + p.state;
      var when = new Date((p.updated || p.created) * 1000);
      st.textContent = (p.state === "committed" ? "paid" : p.state) + " " +
        when.toTimeString().slice(0, 5);
      r1.appendChild(a); r1.appendChild(st);
      var d = document.createElement("span");
      d.className = "desc";
      d.textContent = (p.receipt || "(no receipt)") + (p.reason ? " — " + p.reason : "");
      li.appendChild(r1); li.appendChild(d);
      if (p.state === "committed") {
        var link = document.createElement("a");
        link.href = "/receipt/" + p.txid;
        link.textContent = "Receipt & proof";
        li.appendChild(link);
        if (p.receipt_link) links[p.txid] = p.receipt_link;
      }
      ul.appendChild(li);
    });
    $("today-total").textContent = total ? Number(total).toLocaleString("en-US") + " " + currency : "";
    if (state) render(state);
  }

  function paymentsProblem(text) {
    var ul = $("payments");
    ul.textContent = "";
    var li = document.createElement("li");
    li.className = "problem";
    li.textContent = "Cannot load today's payments: " + text;
    ul.appendChild(li);
  }

  // -- websocket with reconnect
  function connect() {
    var proto = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(proto + location.host + "/ws");
    ws.onopen = function () {
      retry = 500;
      $("live").textContent = "live";
      $("live").classList.remove("off");
    };
    ws.onmessage = function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg.type === "state") render(msg.state);
      else if (msg.type === "payments") renderPayments(msg.payments || []);
      else if (msg.type === "error" && msg.op === "payments") paymentsProblem(msg.message);
      else if (msg.type === "error") showError(msg.message);
    };
    ws.onclose = function (ev) {
      $("live").classList.add("off");
      if (ev.code === 4001) {  // a newer page of this device took this one's place: no reconnect war
        $("live").textContent = "replaced";
        showError("This page was replaced by a newer page on this device: reload it to use it here.");
        return;
      }
      $("live").textContent = "offline: reconnecting";
      // signed out (revoked, or the session is unknown): back to the sign-in page
      fetch("/api/state", {credentials: "same-origin"}).then(function (r) {
        if (r.status === 401) location.href = "/login";
      }, function () {});
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 5000);
    };
  }
  renderAmount();
  connect();
})();
