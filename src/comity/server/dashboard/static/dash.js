// comity dashboard: keeps a server-rendered page live over server-sent events.
// No framework: the server renders every view; this script only counts leases down,
// swaps in the fragments the server renders again, and adds new events to the news.
(function () {
  "use strict";
  var body = document.body;
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  if (!main) return;
  var serverNow = parseFloat(body.getAttribute("data-now"));
  var offset = isNaN(serverNow) ? 0 : serverNow - Date.now() / 1000; // the authority's clock, as leases are judged

  function fmt(s) {
    if (s >= 3600) return (s / 3600).toFixed(1) + " h";
    if (s >= 90) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + "s";
    return Math.ceil(s) + "s";
  }
  function tick() {
    var now = Date.now() / 1000 + offset;
    var els = document.querySelectorAll(".ttl[data-expires]");
    for (var i = 0; i < els.length; i++) {
      var left = parseFloat(els[i].getAttribute("data-expires")) - now;
      els[i].textContent = left > 0 ? fmt(left) : "expired";
      els[i].classList.toggle("bad", left <= 0);
    }
  }
  setInterval(tick, 1000);
  tick();

  function debounce(fn, ms) {
    var t = null;
    return function () {
      if (t) clearTimeout(t);
      t = setTimeout(function () { t = null; fn(); }, ms);
    };
  }
  function get(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } }).then(function (r) {
      if (r.status === 401) { location.reload(); throw new Error("signed out"); }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    });
  }
  function refresh() {
    var url = main.getAttribute("data-refresh");
    if (!url) return;
    get(url).then(function (html) { main.innerHTML = html; tick(); }).catch(function () {});
  }
  var refreshSoon = debounce(refresh, 400);

  // ---- the board: one card at a time
  var pendingCards = {};
  function taskOf(key) {
    var m = /^(?:@lease\/)?@task\/(T-\d+)$/.exec(key);
    if (m) return m[1];
    m = /^@open\/0*(\d+)$/.exec(key);
    if (m) return "T-" + m[1];
    m = /^@change\/(C-\d+)$/.exec(key);
    if (m) {
      var chips = document.querySelectorAll(".chg");
      for (var i = 0; i < chips.length; i++) {
        if (chips[i].textContent.indexOf(m[1] + " ") === 0) return chips[i].closest(".card").getAttribute("data-task");
      }
    }
    return null;
  }
  function place(card) {
    var id = card.getAttribute("data-task");
    var state = card.getAttribute("data-state");
    var old = document.getElementById("task-" + id);
    var column = document.querySelector('[data-column="' + state + '"]');
    if (old && old.parentNode && column && old.parentNode === column.querySelector(".cards")) {
      old.parentNode.replaceChild(card, old);
      return;
    }
    if (old) {
      var from = old.closest("[data-column]");
      old.parentNode.removeChild(old);
      if (from) bump(from, -1);
    }
    if (!column) return;
    var cards = column.querySelector(".cards");
    var n = parseInt(id.slice(2), 10);
    var finished = state === "done" || state === "failed" || state === "submitted";
    var before = null;
    if (!finished) {
      for (var c = cards.firstElementChild; c; c = c.nextElementSibling) {
        if (parseInt(c.getAttribute("data-task").slice(2), 10) > n) { before = c; break; }
      }
    } else {
      before = cards.firstElementChild;
    }
    cards.insertBefore(card, before);
    bump(column, 1);
  }
  function bump(column, by) {
    var count = column.querySelector("h2 .count");
    if (count) count.textContent = String(Math.max(0, parseInt(count.textContent, 10) + by));
  }
  function loadCard(id) {
    get("/dash/task/" + encodeURIComponent(id)).then(function (html) {
      var t = document.createElement("template");
      t.innerHTML = html.trim();
      var card = t.content.firstElementChild;
      if (card) { place(card); tick(); }
    }).catch(function () {});
  }
  function onBoard(e) {
    var id = taskOf(String(e.key || ""));
    if (!id) return;
    if (pendingCards[id]) return;
    pendingCards[id] = setTimeout(function () { delete pendingCards[id]; loadCard(id); }, 60);
  }

  // ---- the news: new rows on top
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function hlcTime(h) {
    var ms = parseInt(String(h).split(".")[0], 10);
    if (isNaN(ms)) return "";
    return new Date(ms).toISOString().replace("T", " ").slice(0, 19);
  }
  function onNews(e) {
    var tbody = document.getElementById("events");
    if (!tbody || tbody.querySelector('[data-pos="' + e.pos + '"]')) return;
    var tr = document.createElement("tr");
    tr.setAttribute("data-pos", e.pos);
    var op = String(e.op || "");
    tr.className = "ev fresh" + (/(refused|fenced)$/.test(op) ? " bad" : "");
    var pos = cell(tr, "", "num");
    var a = document.createElement("a");
    a.href = "/causality?target=" + encodeURIComponent(e.key);
    a.textContent = String(e.pos);
    pos.appendChild(a);
    cell(tr, hlcTime(e.hlc), "t");
    var who = cell(tr, "");
    var b = document.createElement("a");
    b.href = "/news?agent=" + encodeURIComponent(e.agent);
    b.textContent = e.agent;
    who.appendChild(b);
    cell(tr, op, "op");
    var k = cell(tr, "");
    var code = document.createElement("code");
    code.textContent = e.key;
    k.appendChild(code);
    cell(tr, (e.preview || "") + (e.reason ? " " + e.reason : ""), "pv");
    tbody.insertBefore(tr, tbody.firstChild);
    var none = document.getElementById("none");
    if (none) none.parentNode.removeChild(none);
    while (tbody.children.length > 500) tbody.removeChild(tbody.lastChild);
  }

  function connect() {
    var url = main.getAttribute("data-stream");
    if (!url || main.getAttribute("data-paused") || !window.EventSource) return;
    var view = body.getAttribute("data-view");
    var es = new EventSource(url);
    es.onopen = function () { if (live) live.classList.add("on"); };
    es.onerror = function () { if (live) live.classList.remove("on"); };
    es.addEventListener("reload", function () { location.reload(); });
    es.addEventListener("change", function (ev) {
      var e;
      try { e = JSON.parse(ev.data); } catch (err) { return; }
      if (view === "board") onBoard(e);
      else if (view === "news") onNews(e);
      else refreshSoon();
    });
  }
  connect();

  // ---- a view still computing (the evidence's quick report): look again shortly
  function poll() {
    var url = main.getAttribute("data-poll");
    if (!url) return;
    setTimeout(function () {
      get(url).then(function (html) {
        main.innerHTML = html;
        if (!document.getElementById("computing")) main.removeAttribute("data-poll");
        poll();
      }).catch(function () { poll(); });
    }, 1500);
  }
  poll();
})();
